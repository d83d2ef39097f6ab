/* Runs an Arduino sketch on a host: setup(), then loop() until stdin ends (see Arduino.h). */
#include "Arduino.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

void setup(void);
void loop(void);

HardwareSerial Serial;
static uint8_t rx[4096];
static size_t rx_len = 0, rx_pos = 0;
static bool eof = false;
static int pin_mode[256];

unsigned long millis(void) {
    static struct timespec start;
    struct timespec ts;
    if (!start.tv_sec && !start.tv_nsec) clock_gettime(CLOCK_MONOTONIC, &start);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long)((ts.tv_sec - start.tv_sec) * 1000L + (ts.tv_nsec - start.tv_nsec) / 1000000L);
}

void pinMode(uint8_t pin, uint8_t mode) { pin_mode[pin] = mode; }

void digitalWrite(uint8_t pin, uint8_t value) {
    if (pin_mode[pin] != OUTPUT) fprintf(stderr, "error: digitalWrite on pin %u not set to OUTPUT\n", pin);
    fprintf(stderr, "pin %u %u\n", pin, value ? 1u : 0u);
}

void analogWrite(uint8_t pin, int value) {
    if (pin_mode[pin] != OUTPUT) fprintf(stderr, "error: analogWrite on pin %u not set to OUTPUT\n", pin);
    if (value < 0 || value > 255) fprintf(stderr, "error: analogWrite %d out of 0..255\n", value);
    fprintf(stderr, "pwm %u %d\n", pin, value);
}

void HardwareSerial::begin(unsigned long baud) { fprintf(stderr, "baud %lu\n", baud); }

int HardwareSerial::available(void) {
    if (rx_pos == rx_len && !eof) {
        struct pollfd p = {0, POLLIN, 0};
        if (poll(&p, 1, 1) > 0) {  /* 1 ms: loop() runs about 1000 times a second, like a busy MCU */
            ssize_t n = ::read(0, rx, sizeof rx);
            if (n <= 0) eof = true;
            else { rx_len = (size_t)n; rx_pos = 0; }
        }
    }
    return (int)(rx_len - rx_pos);
}

int HardwareSerial::read(void) { return rx_pos < rx_len ? rx[rx_pos++] : -1; }

size_t HardwareSerial::write(const uint8_t *bytes, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t k = ::write(1, bytes + done, n - done);
        if (k < 0) { if (errno == EINTR) continue; break; }
        done += (size_t)k;
    }
    return done;
}

int main(void) {
    setup();
    while (!eof || rx_pos < rx_len) loop();
    for (int i = 0; i < 5; i++) loop();
    return 0;
}
