/* The C controller on stdin/stdout: the fuzzing harness (no pty, no threads, as fast as a pipe).
 *
 *     firmware/build/stdio_controller < frames.bin > replies.bin
 *
 * Protocol bytes in on stdin, the controller's replies out on stdout (binary, unbuffered per
 * read). On stderr, one line per motor output that is not all zero ("moved <ms> <duties>"), and at
 * the end "frames <valid> bad_crc <n> moved <n>". Exit status 0; a crash shows as a signal.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "../mvla_controller.h"
#include "host_io.h"

static unsigned long moved = 0;

static uint32_t now_ms(void) { return host_now_ms(); }

static void write_bytes(void *user, const uint8_t *bytes, size_t n) {
    (void)user;
    host_write_all(1, bytes, n);
}

static void on_motors(void *user, const float *duty, uint8_t wheels) {
    int i, nonzero = 0;
    (void)user;
    for (i = 0; i < wheels; i++) nonzero |= duty[i] != 0.0f;
    if (!nonzero) return;
    moved++;
    fprintf(stderr, "moved %lu", (unsigned long)now_ms());
    for (i = 0; i < wheels; i++) fprintf(stderr, " %.6f", duty[i]);
    fprintf(stderr, "\n");
}

int main(void) {
    mvla_config cfg;
    mvla_controller ctl;
    uint8_t buf[65536];
    ssize_t n;
    mvla_config_defaults(&cfg);
    mvla_init(&ctl, &cfg, write_bytes, on_motors, NULL, now_ms());
    while ((n = read(0, buf, sizeof buf)) != 0) {
        if (n < 0) {
            if (errno == EINTR) continue;
            break;
        }
        mvla_feed(&ctl, buf, (size_t)n, now_ms());
        mvla_tick(&ctl, now_ms());
    }
    fprintf(stderr, "frames %lu bad_crc %u moved %lu\n", (unsigned long)ctl.frames, (unsigned)ctl.bad_crc, moved);
    return 0;
}
