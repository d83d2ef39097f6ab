/* What the two host programs (pty_controller, stdio_controller) need from the OS beyond the core:
 * the controller's millisecond clock and a write that survives EINTR and short writes. A board has
 * neither problem (millis() and a UART FIFO); only the host builds include this. */
#ifndef MVLA_HOST_IO_H
#define MVLA_HOST_IO_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

static uint32_t host_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

/* All of `bytes`, or as much as the descriptor takes before an error: a full or closed pty drops the
 * rest of a reply, as a UART would. */
static void host_write_all(int fd, const uint8_t *bytes, size_t n) {
    while (n) {
        ssize_t k = write(fd, bytes, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return;
        }
        bytes += k;
        n -= (size_t)k;
    }
}

#endif
