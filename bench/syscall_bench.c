/*
 * syscall_bench: nanoseconds per system call, optionally under a seccomp
 * filter that this program loads itself.
 *
 * Built by bench/run (gcc -O2 into bench/build/). One process measures one
 * filter variant once: the harness starts it again and again, round-robin
 * over the variants, so slow drift of the machine (frequency, noisy
 * neighbours on a shared VM) hits every variant alike.
 *
 *   syscall_bench [--filter FILE] [--flags N] [--only a,b,c] [--scale F] [--repeats R]
 *
 * FILE holds a raw array of struct sock_filter (8 bytes per instruction),
 * exactly what libseccomp's seccomp_export_bpf() writes and what an
 * enforcer Plan carries base64-encoded. The filter is loaded with
 * PR_SET_NO_NEW_PRIVS + seccomp(SECCOMP_SET_MODE_FILTER, flags 0 unless
 * --flags says otherwise, for spot checks of SECCOMP_FILTER_FLAG_LOG): the same
 * loader for every variant, so the only thing that differs between two
 * runs is the BPF program. (flags 0: no SECCOMP_FILTER_FLAG_LOG, which only
 * changes what happens on a *denied* call, and no SPEC_ALLOW; this
 * machine's kernel reports spec_store_bypass "Vulnerable", so seccomp does
 * not switch speculation mitigations on either way.)
 *
 * Output: a comment line "# inherited_filters N" (seccomp filters the
 * process had before loading its own), then one line per syscall:
 *   <name> <ns per call> <return value of the last call> <errno or 0>
 * A non-zero errno tells the harness that the filter (or the kernel)
 * refused the call: the time is then the cost of the deny path.
 *
 * Every call goes through syscall(2), never a libc wrapper with a vDSO
 * shortcut, so clock_getres really enters the kernel.
 *
 * Timing: a sample is the minimum over R repeats (times a per-syscall
 * factor) of (time for N calls)/N.
 * The minimum drops repeats that an interrupt or a preemption hit; the
 * harness then takes the median over many processes (rounds).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/futex.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_INSNS 4096

static int devzero_fd = -1;
static uint32_t futex_word;
static struct stat stat_buf;
static struct timespec res_buf;
static char read_buf[1];

/* Each benchmark body makes one call (or one pair) and returns the raw
 * result; errno is left as the kernel set it. */
typedef long (*bench_fn)(void);

static long b_getppid(void) { return syscall(SYS_getppid); }
static long b_read0(void) { return syscall(SYS_read, devzero_fd, read_buf, 0); }
static long b_fstat(void) { return syscall(SYS_fstat, devzero_fd, &stat_buf); }
/* A descriptor number far above anything open: the kernel answers EBADF,
 * which is the point (close with nothing to close). Not a deny. */
static long b_close_bad(void) { return syscall(SYS_close, 1 << 20); }
static long b_clock_getres(void) { return syscall(SYS_clock_getres, CLOCK_MONOTONIC, &res_buf); }
static long b_futex_wake(void)
{
    return syscall(SYS_futex, &futex_word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}
static long b_socket(void)
{
    long fd = syscall(SYS_socket, AF_INET, SOCK_DGRAM, 0);
    if (fd >= 0)
        syscall(SYS_close, fd);
    return fd;
}
/* 0xffffffff asks for the current persona without changing it. Passed as
 * a full unsigned long so the filter sees the high word 0, as glibc does. */
static long b_personality(void) { return syscall(SYS_personality, 0xffffffffUL); }
static long b_fork_wait(void)
{
    /* clone(SIGCHLD) with no new stack is fork(): the child runs on a copy
     * of our memory and leaves at once. Raw syscalls on both sides so the
     * filter sees exactly clone, exit_group and wait4. */
    long pid = syscall(SYS_clone, (unsigned long)SIGCHLD, 0UL, 0UL, 0UL, 0UL);
    if (pid == 0)
        syscall(SYS_exit_group, 0);
    if (pid > 0) {
        int status;
        syscall(SYS_wait4, pid, &status, 0, NULL);
    }
    return pid;
}

struct bench {
    const char *name;
    bench_fn fn;
    long iterations; /* per repeat, before --scale */
    int repeat_factor; /* repeats = --repeats x this */
};

static const struct bench benches[] = {
    /* Batches are short (~0.5-1 ms) and many: a batch shorter than a
     * scheduler time slice usually runs without being preempted even when
     * other work competes for the CPU, so the minimum over batches stays
     * the uncontended figure. Long batches (we first used 20000 calls,
     * ~8 ms) were preempted every time on a loaded machine. */
    {"getppid", b_getppid, 2000, 5},
    {"read0", b_read0, 2000, 5},
    {"fstat", b_fstat, 2000, 5},
    {"close_badfd", b_close_bad, 2000, 5},
    {"clock_getres", b_clock_getres, 2000, 5},
    {"futex_wake", b_futex_wake, 2000, 5},
    {"socket_inet", b_socket, 200, 5},
    {"personality", b_personality, 2000, 5},
    /* fork+wait is ~80 us here and doubles whenever the other CPU is busy
     * (the child waits for a CPU). */
    {"fork_wait", b_fork_wait, 20, 3},
};
#define NBENCH (sizeof benches / sizeof benches[0])

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* vDSO on this clocksource (tsc) */
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int load_filter(const char *path, unsigned long flags)
{
    static struct sock_filter insns[MAX_INSNS];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "syscall_bench: open %s: %s\n", path, strerror(errno));
        return -1;
    }
    ssize_t n = read(fd, insns, sizeof insns);
    close(fd);
    if (n <= 0 || n % (ssize_t)sizeof(struct sock_filter) != 0) {
        fprintf(stderr, "syscall_bench: %s: %zd bytes is not a whole BPF program\n", path, n);
        return -1;
    }
    struct sock_fprog prog = {
        .len = (unsigned short)(n / (ssize_t)sizeof(struct sock_filter)),
        .filter = insns,
    };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        fprintf(stderr, "syscall_bench: prctl(PR_SET_NO_NEW_PRIVS): %s\n", strerror(errno));
        return -1;
    }
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog) != 0) {
        fprintf(stderr, "syscall_bench: seccomp(SET_MODE_FILTER): %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

/* Seccomp_filters: from /proc/self/status (Linux >= 5.9), -1 if unknown. */
static int count_inherited_filters(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    if (!f)
        return -1;
    char line[256];
    int n = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Seccomp_filters: %d", &n) == 1)
            break;
    fclose(f);
    return n;
}

static int selected(const char *only, const char *name)
{
    if (!only)
        return 1;
    size_t len = strlen(name);
    for (const char *p = only; *p;) {
        const char *comma = strchr(p, ',');
        size_t l = comma ? (size_t)(comma - p) : strlen(p);
        if (l == len && strncmp(p, name, l) == 0)
            return 1;
        if (!comma)
            break;
        p = comma + 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *filter = NULL, *only = NULL;
    unsigned long flags = 0;
    double scale = 1.0;
    int repeats = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--filter") && i + 1 < argc)
            filter = argv[++i];
        else if (!strcmp(argv[i], "--flags") && i + 1 < argc)
            flags = strtoul(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--scale") && i + 1 < argc)
            scale = atof(argv[++i]);
        else if (!strcmp(argv[i], "--repeats") && i + 1 < argc)
            repeats = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--list")) {
            for (size_t b = 0; b < NBENCH; b++)
                printf("%s\n", benches[b].name);
            return 0;
        } else {
            fprintf(stderr,
                    "usage: %s [--filter BPF_FILE] [--flags N] [--only a,b] [--scale F] "
                    "[--repeats R] "
                    "[--list]\n",
                    argv[0]);
            return 2;
        }
    }
    if (scale <= 0 || repeats < 1) {
        fprintf(stderr, "syscall_bench: --scale must be > 0 and --repeats >= 1\n");
        return 2;
    }

    /* Everything that allocates or opens happens before the filter is on:
     * after it, the program only makes the measured calls, write(2) and
     * exit_group(2). */
    devzero_fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    if (devzero_fd < 0) {
        perror("syscall_bench: open /dev/zero");
        return 1;
    }
    static char out[8192];
    size_t used = 0;
    /* Report the filters this process inherited (e.g. from `enforcer run`),
     * so the harness can check that a variant measures what it claims. */
    int inherited = count_inherited_filters();
    used += (size_t)snprintf(out, sizeof out, "# inherited_filters %d\n", inherited);

    /* No filter: still set no_new_privs, so the unfiltered variant differs
     * from the others only by the filter. */
    if (filter ? load_filter(filter, flags) != 0 : prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return 1;

    for (size_t b = 0; b < NBENCH; b++) {
        const struct bench *bn = &benches[b];
        if (!selected(only, bn->name))
            continue;
        long n = (long)(bn->iterations * scale);
        if (n < 1)
            n = 1;
        long ret = 0;
        int err = 0;
        for (long i = 0; i < n / 10 + 1; i++) /* warm caches and predictors */
            bn->fn();
        double best = -1;
        for (int r = 0; r < repeats * bn->repeat_factor; r++) {
            double t0 = now_ns();
            for (long i = 0; i < n; i++)
                ret = bn->fn();
            double t1 = now_ns();
            double per = (t1 - t0) / (double)n;
            if (best < 0 || per < best)
                best = per;
        }
        errno = 0;
        ret = bn->fn();
        err = ret < 0 ? errno : 0;
        /* close_badfd's EBADF is the kernel's answer, not the filter's. */
        if (bn->fn == b_close_bad && err == EBADF)
            err = 0;
        int w = snprintf(out + used, sizeof out - used, "%s %.2f %ld %d\n", bn->name, best, ret,
                         err);
        if (w > 0 && (size_t)w < sizeof out - used)
            used += (size_t)w;
    }
    for (size_t off = 0; off < used;) {
        ssize_t w = write(1, out + off, used - off);
        if (w <= 0)
            return 1;
        off += (size_t)w;
    }
    return 0;
}
