/* Just enough of the Arduino core to build and run the sketch on a host (the tests' check of
 * firmware/arduino/): Serial is stdin/stdout, pin writes are logged to stderr as
 * "pin <n> <value>" (digital 0/1) and "pwm <n> <0..255>", millis() is CLOCK_MONOTONIC, and
 * <avr/wdt.h> is a watchdog that resets the sketch (avr/wdt.h says how). The environment variable
 * ARDUINO_SHIM_HANG_AFTER_MS=N makes the MCU hang once, N ms after start (loop() never returns:
 * stderr "hang <ms>"), for the test of that watchdog. */
#ifndef MVLA_ARDUINO_SHIM_H
#define MVLA_ARDUINO_SHIM_H
#include <stddef.h>
#include <stdint.h>

#define HIGH 1
#define LOW 0
#define OUTPUT 1
#define INPUT 0
#define WDRF 3  /* MCUSR bit: the last reset was the watchdog's */

extern volatile uint8_t MCUSR;  /* the AVR's MCU status register: why it last reset */

unsigned long millis(void);
void pinMode(uint8_t pin, uint8_t mode);
void digitalWrite(uint8_t pin, uint8_t value);
void analogWrite(uint8_t pin, int value);

class HardwareSerial {
  public:
    void begin(unsigned long baud);
    int available(void);
    int read(void);
    size_t write(const uint8_t *bytes, size_t n);
};
extern HardwareSerial Serial;
#endif
