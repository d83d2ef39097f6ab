/* Just enough of the Arduino core to build and run the sketch on a host (the tests' check of
 * firmware/arduino/): Serial is stdin/stdout, pin writes are logged to stderr as
 * "pin <n> <value>" (digital 0/1) and "pwm <n> <0..255>", millis() is CLOCK_MONOTONIC. */
#ifndef MVLA_ARDUINO_SHIM_H
#define MVLA_ARDUINO_SHIM_H
#include <stddef.h>
#include <stdint.h>

#define HIGH 1
#define LOW 0
#define OUTPUT 1
#define INPUT 0

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
