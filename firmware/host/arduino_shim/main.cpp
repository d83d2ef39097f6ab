/* Runs an Arduino sketch on a host: setup(), then loop() until stdin ends (see Arduino.h); a
 * watchdog reset (avr/wdt.h) starts it over from setup(). */
#include "Arduino.h"
#include "avr/wdt.h"

#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

void setup(void);
void loop(void);

HardwareSerial Serial;
static uint8_t rx[4096];
static size_t rx_len = 0, rx_pos = 0;
static bool eof = false;
static int pin_mode[256];
volatile uint8_t MCUSR = 0;

/* -- the watchdog: a SIGALRM every 5 ms looks at the deadline; a reset jumps back to main() ------ */
static sigjmp_buf reset_point;
static volatile sig_atomic_t wdt_on = 0, wdt_overdue = 0;
static volatile unsigned long wdt_ms = 0, wdt_deadline = 0;
static unsigned long hang_at = 0;  /* ARDUINO_SHIM_HANG_AFTER_MS, 0: never */
static const unsigned long WDT_TIMEOUTS[] = {15, 30, 60, 120, 250, 500, 1000, 2000, 4000, 8000};

unsigned long millis(void) {
    static struct timespec start;
    struct timespec ts;
    if (!start.tv_sec && !start.tv_nsec) clock_gettime(CLOCK_MONOTONIC, &start);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long)((ts.tv_sec - start.tv_sec) * 1000L + (ts.tv_nsec - start.tv_nsec) / 1000000L);
}

void wdt_enable(uint8_t timeout) {
    wdt_ms = WDT_TIMEOUTS[timeout < 10 ? timeout : 9];
    wdt_deadline = millis() + wdt_ms;
    wdt_overdue = 0;
    wdt_on = 1;
    fprintf(stderr, "wdt enable %lu\n", (unsigned long)wdt_ms);
}

void wdt_reset(void) {
    wdt_deadline = millis() + wdt_ms;
    wdt_overdue = 0;
}

void wdt_disable(void) {
    if (!(MCUSR & (1 << WDRF))) wdt_on = 0;
}

static void on_alarm(int sig) {
    (void)sig;
    if (!wdt_on || (long)(millis() - wdt_deadline) < 0) return;
    if (!wdt_overdue) {  /* first sight: maybe only descheduled; loop() gets one more chance */
        wdt_overdue = 1;
        return;
    }
    siglongjmp(reset_point, 1);
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
    if (hang_at && millis() >= hang_at) {  /* the MCU hangs here: only the watchdog gets it out */
        fprintf(stderr, "hang %lu\n", millis());
        hang_at = 0;
        for (;;) pause();
    }
    if (rx_pos == rx_len && !eof) {
        struct pollfd p = {0, POLLIN, 0};
        if (poll(&p, 1, 1) > 0) {  /* 1 ms: loop() runs about 1000 times a second, like a busy MCU */
            ssize_t n = ::read(0, rx, sizeof rx);
            if (n == 0 || (n < 0 && errno != EINTR)) eof = true;
            else if (n > 0) { rx_len = (size_t)n; rx_pos = 0; }
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
    struct sigaction sa;
    struct itimerval every5ms = {{0, 5000}, {0, 5000}};
    const char *hang = getenv("ARDUINO_SHIM_HANG_AFTER_MS");
    hang_at = hang ? strtoul(hang, NULL, 10) : 0;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    setitimer(ITIMER_REAL, &every5ms, NULL);
    if (sigsetjmp(reset_point, 1)) {
        /* A watchdog reset: every pin an input again (the motor driver's inputs float: no drive), the
           UART's bytes lost, WDRF set and the watchdog still on at 15 ms, as an AVR comes out of it. */
        fprintf(stderr, "reset watchdog %lu\n", millis());
        for (int i = 0; i < 256; i++) pin_mode[i] = INPUT;
        rx_pos = rx_len;
        MCUSR = (uint8_t)(MCUSR | (1 << WDRF));
        wdt_ms = 15;
        wdt_deadline = millis() + wdt_ms;
        wdt_overdue = 0;
        wdt_on = 1;
    }
    setup();
    while (!eof || rx_pos < rx_len) loop();
    for (int i = 0; i < 5; i++) loop();
    return 0;
}
