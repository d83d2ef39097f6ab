/* The C controller (firmware/mvla_controller.c) serving the protocol on a pseudo-terminal.
 *
 *     make -C firmware                      # -> firmware/build/pty_controller
 *     firmware/build/pty_controller --link /tmp/mobile-vla-motor [--base mecanum|omni3|differential]
 *     python -m runtime.drive --serial /tmp/mobile-vla-motor ...
 *
 * What a board does with its wheels is written to stdout, one line per event:
 *     port /dev/pts/7                                    the pty (again after every replug)
 *     apply <ms> <EVENT> <vx> <vy> <wz>                  SET_VELOCITY SET_WHEELS STOP WATCHDOG REFUSED UNPLUG REBOOT
 *     motor <ms> <duty0> .. <dutyN-1>                    every motor output, in [-1, 1]
 *     ready                                              READY sent (boot, end of a reboot)
 * Lines on stdin act on the "board" (the tests' cable and reset button):
 *     unplug | replug | mute | unmute | reboot <ms> | inject <hex bytes> | sync | quit
 * End of stdin quits too, so the program never outlives its parent. Base options:
 *     --wheel-radius R --half-length L --half-width W (mecanum), --base-radius B --first-wheel-deg D
 *     (omni3), --track-width T (differential), --matrix a,b,c,... (wheels x 3, overrides the base),
 *     --max-linear --max-angular --max-wheel --default-watchdog-ms --max-watchdog-ms (the core clamps the
 *     last two to its 1000 ms cap). The base kind INFO reports follows from the matrix (differential when no
 *     wheel follows vy).
 * It has no hardware watchdog to model: its loop is this process, which the tests never hang (the sketch's
 * AVR watchdog is tested through firmware/host/arduino_shim instead).
 */
#define _XOPEN_SOURCE 600
#define _DEFAULT_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "../mvla_controller.h"
#include "host_io.h"

static int master_fd = -1, slave_fd = -1;
static const char *link_path = NULL;
static mvla_controller ctl;
static mvla_config cfg;
static int muted = 0;
static uint32_t booting_until = 0;
static int booting = 0;

static uint32_t now_ms(void) { return host_now_ms(); }

static void write_bytes(void *user, const uint8_t *bytes, size_t n) {
    (void)user;
    if (master_fd >= 0) host_write_all(master_fd, bytes, n);
}

static void on_motors(void *user, const float *duty, uint8_t wheels) {
    int i;
    (void)user;
    printf("motor %lu", (unsigned long)now_ms());
    for (i = 0; i < wheels; i++) printf(" %.6f", duty[i]);
    printf("\n");
    fflush(stdout);
}

static const char *event_names[] = {"SET_VELOCITY", "SET_WHEELS", "STOP", "WATCHDOG", "REFUSED", "UNPLUG"};

static void on_event(void *user, int event, float vx, float vy, float wz) {
    (void)user;
    printf("apply %lu %s %.9g %.9g %.9g\n", (unsigned long)now_ms(), event_names[event], vx, vy, wz);
    fflush(stdout);
}

static int open_pty(void) {
    struct termios t;
    const char *name;
    master_fd = posix_openpt(O_RDWR | O_NOCTTY);
    if (master_fd < 0 || grantpt(master_fd) || unlockpt(master_fd) || !(name = ptsname(master_fd))) {
        perror("posix_openpt");
        return -1;
    }
    /* Holding the slave open keeps the master readable while the host closes and reopens its side. */
    slave_fd = open(name, O_RDWR | O_NOCTTY);
    if (slave_fd < 0) { perror(name); return -1; }
    if (tcgetattr(slave_fd, &t) == 0) { cfmakeraw(&t); tcsetattr(slave_fd, TCSANOW, &t); }
    if (tcgetattr(master_fd, &t) == 0) { cfmakeraw(&t); tcsetattr(master_fd, TCSANOW, &t); }
    if (link_path) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.new", link_path);
        unlink(tmp);
        if (symlink(name, tmp) || rename(tmp, link_path)) { perror(link_path); return -1; }
    }
    printf("port %s\n", name);
    fflush(stdout);
    return 0;
}

static void close_pty(void) {
    if (master_fd >= 0) close(master_fd);
    if (slave_fd >= 0) close(slave_fd);
    master_fd = slave_fd = -1;
    if (link_path) unlink(link_path);
}

static void boot(void) {
    mvla_init(&ctl, &cfg, write_bytes, on_motors, NULL, now_ms());
    ctl.event = on_event;
    mvla_announce(&ctl);
    printf("ready\n");
    fflush(stdout);
}

static int hexval(int ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Returns 0 to quit. */
static int command(char *line) {
    line[strcspn(line, "\r\n")] = 0;
    if (!strcmp(line, "quit")) return 0;
    if (!strcmp(line, "unplug")) {
        close_pty();
        mvla_link_lost(&ctl);
    } else if (!strcmp(line, "replug")) {
        if (master_fd < 0 && open_pty()) return 0;
    } else if (!strcmp(line, "sync")) {
        /* nothing: its "done" line comes after every line printed before it */
    } else if (!strcmp(line, "mute")) {
        muted = 1;
    } else if (!strcmp(line, "unmute")) {
        muted = 0;
    } else if (!strncmp(line, "reboot ", 7)) {
        /* The auto-reset circuit of Arduino/CH340/FTDI boards: motors off at once, deaf while the
           bootloader runs, then the sketch starts again and says READY. */
        float v[MVLA_MAX_WHEELS] = {0};
        printf("apply %lu REBOOT 0 0 0\n", (unsigned long)now_ms());
        on_motors(NULL, v, cfg.wheels);
        booting = 1;
        booting_until = now_ms() + (uint32_t)strtoul(line + 7, NULL, 10);
    } else if (!strncmp(line, "inject ", 7)) {
        uint8_t out[2048];
        size_t n = 0;
        const char *p = line + 7;
        while (p[0] && p[1] && n < sizeof out) {
            int hi = hexval(p[0]), lo = hexval(p[1]);
            if (hi < 0 || lo < 0) break;
            out[n++] = (uint8_t)(hi << 4 | lo);
            p += 2;
        }
        write_bytes(NULL, out, n);
    } else {
        fprintf(stderr, "pty_controller: unknown command %s\n", line);
    }
    printf("done %s\n", line);  /* the caller waits for this before it acts on the result */
    fflush(stdout);
    return 1;
}

static int parse_matrix(const char *s) {
    int n = 0;
    char *end;
    while (*s && n < 3 * MVLA_MAX_WHEELS) {
        float v = strtof(s, &end);
        if (end == s) return -1;
        cfg.matrix[n / 3][n % 3] = v;
        n++;
        s = (*end == ',') ? end + 1 : end;
    }
    if (n % 3 || n < 3) return -1;
    cfg.wheels = (uint8_t)(n / 3);
    return 0;
}

int main(int argc, char **argv) {
    const char *base = "mecanum", *matrix = NULL;
    float r = -1, half_length = 0.1f, half_width = 0.1f, base_radius = 0.15f, first_deg = 90.0f, track = 0.3f;
    char line[8192];
    size_t line_len = 0;
    int i;

    signal(SIGPIPE, SIG_IGN);
    mvla_config_defaults(&cfg);
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { fprintf(stderr, "pty_controller: %s needs a value\n", a); return 2; }
        i++;
        if (!strcmp(a, "--link")) link_path = v;
        else if (!strcmp(a, "--base")) base = v;
        else if (!strcmp(a, "--matrix")) matrix = v;
        else if (!strcmp(a, "--wheel-radius")) r = strtof(v, NULL);
        else if (!strcmp(a, "--half-length")) half_length = strtof(v, NULL);
        else if (!strcmp(a, "--half-width")) half_width = strtof(v, NULL);
        else if (!strcmp(a, "--base-radius")) base_radius = strtof(v, NULL);
        else if (!strcmp(a, "--first-wheel-deg")) first_deg = strtof(v, NULL);
        else if (!strcmp(a, "--track-width")) track = strtof(v, NULL);
        else if (!strcmp(a, "--max-linear")) cfg.max_linear = strtof(v, NULL);
        else if (!strcmp(a, "--max-angular")) cfg.max_angular = strtof(v, NULL);
        else if (!strcmp(a, "--max-wheel")) cfg.max_wheel = strtof(v, NULL);
        else if (!strcmp(a, "--default-watchdog-ms")) cfg.default_watchdog_ms = (uint16_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--max-watchdog-ms")) cfg.max_watchdog_ms = (uint16_t)strtoul(v, NULL, 10);
        else { fprintf(stderr, "pty_controller: unknown option %s\n", a); return 2; }
    }
    if (!strcmp(base, "mecanum")) mvla_mecanum(&cfg, r > 0 ? r : 0.04f, half_length, half_width);
    else if (!strcmp(base, "omni3")) mvla_omni3(&cfg, r > 0 ? r : 0.05f, base_radius, first_deg);
    else if (!strcmp(base, "differential")) mvla_differential(&cfg, r > 0 ? r : 0.05f, track);
    else { fprintf(stderr, "pty_controller: --base %s: expected mecanum, omni3 or differential\n", base); return 2; }
    if (matrix && parse_matrix(matrix)) {
        fprintf(stderr, "pty_controller: --matrix %s: expected 3 comma-separated numbers per wheel, 1-4 wheels\n",
                matrix);
        return 2;
    }
    if (!(cfg.max_wheel > 0)) { fprintf(stderr, "pty_controller: --max-wheel must be > 0\n"); return 2; }

    if (open_pty()) return 1;
    boot();
    for (;;) {
        struct pollfd fds[2];
        int nfds = 0, k;
        fds[nfds].fd = 0; fds[nfds].events = POLLIN; nfds++;
        if (master_fd >= 0) { fds[nfds].fd = master_fd; fds[nfds].events = POLLIN; nfds++; }
        k = poll(fds, (nfds_t)nfds, 2);  /* 2 ms: the watchdog's resolution */
        if (k < 0 && errno != EINTR) { perror("poll"); break; }
        if (booting && (int32_t)(now_ms() - booting_until) >= 0) {
            booting = 0;
            boot();
        }
        if (!booting) mvla_tick(&ctl, now_ms());
        if (k <= 0) continue;
        if (nfds == 2 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            uint8_t buf[4096];
            ssize_t n = read(master_fd, buf, sizeof buf);
            if (n > 0 && !muted && !booting) mvla_feed(&ctl, buf, (size_t)n, now_ms());
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(0, line + line_len, sizeof line - 1 - line_len);
            if (n <= 0) break;  /* parent gone */
            line_len += (size_t)n;
            line[line_len] = 0;
            for (;;) {
                char *nl = memchr(line, '\n', line_len);
                size_t used;
                if (!nl) {
                    if (line_len == sizeof line - 1) line_len = 0;  /* an over-long line is dropped */
                    break;
                }
                *nl = 0;
                used = (size_t)(nl - line) + 1;
                if (!command(line)) { line_len = 0; goto out; }
                memmove(line, line + used, line_len - used);
                line_len -= used;
                line[line_len] = 0;
            }
        }
    }
out:
    mvla_link_lost(&ctl);  /* leaving: motors to zero */
    close_pty();
    return 0;
}
