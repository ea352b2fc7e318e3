/*
 * probe: escape and abuse attempts for testing `enforcer run` policies.
 *
 * Usage: probe [NAME...]        (no names: run every probe)
 * Output: one line per probe:  "<name> <blocked|allowed|setup-error> <detail>"
 *
 * Every attempt runs in its own child process, so a probe killed by the
 * seccomp filter (SIGSYS) or the OOM killer reports as blocked and the
 * others still run. Every attempt is harmless if it gets through: reboot
 * only with CAD_OFF/CAD_ON re-setting the current value, kexec/module calls with empty or
 * invalid arguments (past the permission check, nothing is loaded), mounts
 * only on a fresh scratch directory and undone at once, nothing written to
 * /proc/sys or /sys (open for writing only), settimeofday(NULL, NULL),
 * swapon/acct of a path that does not exist, sockets created and closed,
 * set-id files and directories only in a fresh scratch directory (removed
 * at once), TIOCSTI/TIOCLINUX only on a pseudo-terminal the probe opened
 * itself (never the terminal it was started from), memory locked only in
 * a small buffer and unlocked at once.
 *
 * The probe refuses to run at all unless it is under a seccomp filter
 * (/proc/self/status "Seccomp: 2"): it is not meant to be run bare.
 *
 * Environment: PROBE_SCRATCH (dir for scratch files, default /tmp),
 * PROBE_FORKS (fork bomb bound, default 256), PROBE_HOG_BYTES (memory hog
 * bound, default 512 MiB; the test passes 2x the policy's memory limit),
 * PROBE_MEMLOCK_BYTES (how much the memory-locking probes try to lock,
 * default 32 KiB; the test passes 2x the policy's memlock rlimit).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/reboot.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <linux/perf_event.h>
#include <linux/bpf.h>
#include <linux/openat2.h>
#include <unistd.h>

/* An attempt returns ALLOWED when the kernel let it through (the call
 * succeeded, or failed only for a reason found after the permission
 * check), BLOCKED otherwise, SETUP when the probe could not even prepare. */
enum { ALLOWED = 0, BLOCKED = 1, SETUP = 3 };

static char detail[512];

static int blocked(const char *call) {
    snprintf(detail, sizeof detail, "%s: %s", call, strerrorname_np(errno) ? strerrorname_np(errno) : "?");
    return BLOCKED;
}

static int allowed(const char *call) {
    snprintf(detail, sizeof detail, "%s succeeded", call);
    return ALLOWED;
}

static const char *scratch_dir(void) {
    const char *s = getenv("PROBE_SCRATCH");
    return s && *s ? s : "/tmp";
}

static int make_scratch(char *buf, size_t n, const char *kind) {
    snprintf(buf, n, "%s/probe-%s-XXXXXX", scratch_dir(), kind);
    if (!mkdtemp(buf)) {
        snprintf(detail, sizeof detail, "cannot make scratch dir in %s: %s", scratch_dir(), strerrorname_np(errno));
        return -1;
    }
    return 0;
}

/* ---- the probes -------------------------------------------------------- */

static int p_mount(void) {
    char dir[256];
    if (make_scratch(dir, sizeof dir, "mnt")) return SETUP;
    int r = mount("none", dir, "tmpfs", 0, "size=4k");
    int e = errno;
    if (r == 0) umount2(dir, MNT_DETACH);
    rmdir(dir);
    errno = e;
    return r == 0 ? allowed("mount tmpfs") : blocked("mount");
}

static int p_unshare_user_mount(void) {
    return unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0 ? allowed("unshare") : blocked("unshare");
}

static int p_setns(void) {
    /* Our own mount namespace: the kernel still checks CAP_SYS_ADMIN and
     * CAP_SYS_CHROOT, and nothing changes if it succeeds. */
    int fd = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return blocked("open /proc/self/ns/mnt");
    int r = setns(fd, CLONE_NEWNS);
    int e = errno;
    close(fd);
    errno = e;
    return r == 0 ? allowed("setns") : blocked("setns");
}

static int p_ptrace_attach(void) {
    pid_t t = fork();
    if (t < 0) return SETUP;
    if (t == 0) { pause(); _exit(0); }
    int r = ptrace(PTRACE_ATTACH, t, 0, 0);
    int e = errno;
    if (r == 0) { waitpid(t, NULL, __WALL); ptrace(PTRACE_DETACH, t, 0, 0); }
    kill(t, SIGKILL);
    waitpid(t, NULL, 0);
    errno = e;
    return r == 0 ? allowed("ptrace attach") : blocked("ptrace");
}

static int p_add_key(void) {
    long r = syscall(SYS_add_key, "user", "enforcer-probe", "x", 1, -2 /* process keyring */);
    return r >= 0 ? allowed("add_key") : blocked("add_key");
}

static int p_bpf(void) {
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.map_type = BPF_MAP_TYPE_ARRAY;
    a.key_size = 4; a.value_size = 4; a.max_entries = 1;
    long fd = syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof a);
    if (fd >= 0) { close(fd); return allowed("bpf map create"); }
    return blocked("bpf");
}

static int p_perf_event_open(void) {
    struct perf_event_attr a;
    memset(&a, 0, sizeof a);
    a.type = PERF_TYPE_SOFTWARE; a.size = sizeof a; a.config = PERF_COUNT_SW_CPU_CLOCK;
    a.disabled = 1; a.exclude_kernel = 1; a.exclude_hv = 1;
    long fd = syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
    if (fd >= 0) { close(fd); return allowed("perf_event_open"); }
    return blocked("perf_event_open");
}

static int p_io_uring_setup(void) {
    char params[120];
    memset(params, 0, sizeof params);
    long fd = syscall(425 /* io_uring_setup */, 1, params);
    if (fd >= 0) { close(fd); return allowed("io_uring_setup"); }
    return blocked("io_uring_setup");
}

static int p_open_by_handle_at(void) {
    /* A zeroed handle: the kernel checks CAP_DAC_READ_SEARCH first; past
     * it, the bogus handle fails with ESTALE/EINVAL and nothing is opened. */
    struct { unsigned int bytes; int type; unsigned char h[8]; } fh = { 8, 1, {0} };
    int mfd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (mfd < 0) return SETUP;
    long r = syscall(SYS_open_by_handle_at, mfd, &fh, O_RDONLY);
    int e = errno;
    close(mfd);
    if (r >= 0) { close(r); return allowed("open_by_handle_at"); }
    errno = e;
    if (e == EPERM || e == EACCES || e == ENOSYS) return blocked("open_by_handle_at");
    snprintf(detail, sizeof detail, "open_by_handle_at passed the permission check (%s)", strerrorname_np(e));
    return ALLOWED;
}

static int past_permission(const char *call) {
    int e = errno;
    if (e == EPERM || e == EACCES || e == ENOSYS) return blocked(call);
    snprintf(detail, sizeof detail, "%s passed the permission check (%s)", call, strerrorname_np(e));
    return ALLOWED;
}

static int p_kexec_load(void) {
    /* Foreign architecture flag: refused with EINVAL right after the
     * CAP_SYS_BOOT check, before anything is loaded or unloaded. */
    long r = syscall(SYS_kexec_load, 0, 0, NULL, 40UL << 16 /* KEXEC_ARCH_ARM */);
    if (r == 0) return allowed("kexec_load");
    return past_permission("kexec_load");
}

static int p_init_module(void) {
    long r = syscall(SYS_init_module, NULL, 0, "");
    if (r == 0) return allowed("init_module");
    return past_permission("init_module");
}

static int p_reboot(void) {
    /* A command that changes nothing: CAD_ON/CAD_OFF matching the current
     * ctrl-alt-del setting (re-setting the value it already has). If the
     * setting cannot be read, an unknown command, which the kernel refuses
     * with EINVAL only after the CAP_SYS_BOOT check. */
    unsigned int cmd = 0x0badc0deU;
    FILE *f = fopen("/proc/sys/kernel/ctrl-alt-del", "r");
    int cad = -1;
    if (f) { if (fscanf(f, "%d", &cad) != 1) cad = -1; fclose(f); }
    if (cad == 0) cmd = LINUX_REBOOT_CMD_CAD_OFF;
    else if (cad > 0) cmd = LINUX_REBOOT_CMD_CAD_ON;
    long r = syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, cmd, NULL);
    if (r == 0) return allowed(cmd == LINUX_REBOOT_CMD_CAD_OFF ? "reboot(CAD_OFF, no change)" : "reboot(CAD_ON, no change)");
    return past_permission("reboot");
}

static int p_swapon(void) {
    long r = syscall(SYS_swapon, "/nonexistent-enforcer-probe", 0);
    if (r == 0) return allowed("swapon");
    return past_permission("swapon");
}

static int p_setuid0(void) {
    long r = syscall(SYS_setuid, 0);
    return r == 0 ? allowed("setuid(0)") : blocked("setuid(0)");
}

static int p_mknod_block(void) {
    char dir[256], path[300];
    if (make_scratch(dir, sizeof dir, "dev")) return SETUP;
    snprintf(path, sizeof path, "%s/blk", dir);
    int r = mknod(path, S_IFBLK | 0600, makedev(7, 0));
    int e = errno;
    unlink(path);
    rmdir(dir);
    errno = e;
    return r == 0 ? allowed("mknod block device") : blocked("mknod");
}

static int p_raw_socket(void) {
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    if (fd >= 0) { close(fd); return allowed("raw socket"); }
    return blocked("socket(AF_INET, SOCK_RAW)");
}

static int p_packet_socket(void) {
    int fd = socket(AF_PACKET, SOCK_RAW, 0);
    if (fd >= 0) { close(fd); return allowed("packet socket"); }
    return blocked("socket(AF_PACKET)");
}

static int p_bind_port_80(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return blocked("socket(AF_INET)");
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(80) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int r = bind(fd, (struct sockaddr *)&a, sizeof a);
    int e = errno;
    close(fd);
    errno = e;
    if (r == 0) return allowed("bind 127.0.0.1:80");
    if (e == EADDRINUSE) { snprintf(detail, sizeof detail, "bind passed the permission check (EADDRINUSE)"); return ALLOWED; }
    return blocked("bind 127.0.0.1:80");
}

static int try_create(const char *dir) {
    char path[256];
    snprintf(path, sizeof path, "%s/enforcer-probe-%d", dir, getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) { close(fd); unlink(path); snprintf(detail, sizeof detail, "created %s", path); return ALLOWED; }
    return blocked("create file");
}

static int p_write_root(void) { return try_create(""); }
static int p_write_etc(void) { return try_create("/etc"); }

static int open_for_write(const char *path) {
    /* Opening for writing is the attempt; nothing is ever written. */
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) { close(fd); snprintf(detail, sizeof detail, "opened %s for writing (nothing written)", path); return ALLOWED; }
    return blocked(path);
}

static int p_write_proc_sys(void) { return open_for_write("/proc/sys/kernel/domainname"); }
static int p_write_sys(void) { return open_for_write("/sys/kernel/mm/transparent_hugepage/enabled"); }

static int p_read_kcore(void) {
    int fd = open("/proc/kcore", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return blocked("open /proc/kcore");
    char b[16];
    ssize_t n = read(fd, b, sizeof b);
    int e = errno;
    close(fd);
    errno = e;
    return n > 0 ? allowed("read /proc/kcore") : blocked("read /proc/kcore");
}

static int p_x32_syscall(void) {
    long r = syscall(0x40000000 | SYS_getpid);
    return r > 0 ? allowed("x32 getpid") : blocked("x32 getpid");
}

static int p_i386_int80(void) {
    long r;
    /* i386 getpid is 20. */
    __asm__ volatile ("int $0x80" : "=a"(r) : "a"(20L) : "memory");
    if (r > 0) return allowed("int 0x80 getpid");
    errno = (int)-r;
    return blocked("int 0x80 getpid");
}

static int p_userfaultfd(void) {
    long fd = syscall(SYS_userfaultfd, O_CLOEXEC);
    if (fd >= 0) { close(fd); return allowed("userfaultfd"); }
    return blocked("userfaultfd");
}

static int p_personality(void) {
    int r = personality(READ_IMPLIES_EXEC);
    if (r == -1) return blocked("personality(READ_IMPLIES_EXEC)");
    int now = personality(0xffffffff);
    if (now != -1 && (now & READ_IMPLIES_EXEC)) return allowed("personality(READ_IMPLIES_EXEC)");
    errno = EPERM;
    return blocked("personality (not applied)");
}

static int p_chroot(void) {
    return chroot("/") == 0 ? allowed("chroot /") : blocked("chroot");
}

static int p_settimeofday(void) {
    /* NULL, NULL: the kernel checks CAP_SYS_TIME, then has nothing to set. */
    return syscall(SYS_settimeofday, NULL, NULL) == 0 ? allowed("settimeofday(NULL, NULL)") : blocked("settimeofday");
}

static int p_syslog(void) {
    long r = syscall(SYS_syslog, 9 /* SYSLOG_ACTION_SIZE_UNREAD: read-only, needs CAP_SYSLOG */, NULL, 0);
    return r >= 0 ? allowed("syslog(SIZE_UNREAD)") : blocked("syslog");
}

static int p_acct(void) {
    long r = syscall(SYS_acct, "/nonexistent-enforcer-probe");
    if (r == 0) return allowed("acct");
    return past_permission("acct");
}

static int p_chmod_suid(void) {
    char dir[256], path[300];
    if (make_scratch(dir, sizeof dir, "suid")) return SETUP;
    snprintf(path, sizeof path, "%s/f", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0755);
    if (fd < 0) { rmdir(dir); snprintf(detail, sizeof detail, "cannot create scratch file"); return SETUP; }
    close(fd);
    int r = chmod(path, 04755);
    int e = errno;
    struct stat st;
    int suid = (r == 0 && stat(path, &st) == 0 && (st.st_mode & S_ISUID));
    unlink(path);
    rmdir(dir);
    errno = e;
    if (suid) return allowed("chmod u+s");
    if (r == 0) { errno = EPERM; return blocked("chmod u+s (bit not set)"); }
    return blocked("chmod u+s");
}

/* Syscalls newer than libseccomp 2.5.4 (issue 17). Debian 12's headers
 * lack their numbers; these are the numbers every architecture with the
 * unified numbering shares (x86_64, aarch64, riscv64, ...). */
#ifndef __NR_fchmodat2
#define __NR_fchmodat2 452
#endif
#ifndef __NR_listmount
#define __NR_listmount 458
#endif
#ifndef __NR_setxattrat
#define __NR_setxattrat 463
#endif

static int p_fchmodat2_suid(void) {
    /* chmod_suid through fchmodat2, which a filter with chmod rules only
     * would let through. */
    char dir[256], path[300];
    if (make_scratch(dir, sizeof dir, "suid2")) return SETUP;
    snprintf(path, sizeof path, "%s/f", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0755);
    if (fd < 0) { rmdir(dir); snprintf(detail, sizeof detail, "cannot create scratch file"); return SETUP; }
    close(fd);
    long r = syscall(__NR_fchmodat2, AT_FDCWD, path, 04755, 0);
    int e = errno;
    struct stat st;
    int suid = (r == 0 && stat(path, &st) == 0 && (st.st_mode & S_ISUID));
    unlink(path);
    rmdir(dir);
    errno = e;
    if (suid) return allowed("fchmodat2 u+s");
    if (r == 0) { errno = EPERM; return blocked("fchmodat2 u+s (bit not set)"); }
    return blocked("fchmodat2 u+s");
}

static int p_listmount(void) {
    /* List the mount IDs under the root mount (read-only). */
    struct { uint32_t size, spare; uint64_t mnt_id, param; } req = {
        24 /* MNT_ID_REQ_SIZE_VER0 */, 0, (uint64_t)-1 /* LSMT_ROOT */, 0};
    uint64_t ids[16];
    long r = syscall(__NR_listmount, &req, ids, 16UL, 0UL);
    return r >= 0 ? allowed("listmount") : past_permission("listmount");
}

static int p_setxattrat(void) {
    /* fd -1 and no path: EBADF once past seccomp; nothing is written. */
    long r = syscall(__NR_setxattrat, -1, NULL, 0, "user.enforcer-probe", NULL, 0UL);
    if (r == 0) return allowed("setxattrat");
    return past_permission("setxattrat");
}

static int p_fork_bomb(void) {
    int n = getenv("PROBE_FORKS") ? atoi(getenv("PROBE_FORKS")) : 256;
    pid_t *kids = calloc(n, sizeof *kids);
    int made = 0, result = ALLOWED, e = 0;
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p == 0) { pause(); _exit(0); }
        if (p < 0) { e = errno; result = BLOCKED; break; }
        kids[made++] = p;
    }
    for (int i = 0; i < made; i++) kill(kids[i], SIGKILL);
    for (int i = 0; i < made; i++) waitpid(kids[i], NULL, 0);
    if (result == BLOCKED) { errno = e; snprintf(detail, sizeof detail, "fork refused after %d: %s", made, strerrorname_np(e)); }
    else snprintf(detail, sizeof detail, "%d forks succeeded", made);
    free(kids);
    return result;
}

static int p_memory_hog(void) {
    const char *s = getenv("PROBE_HOG_BYTES");
    size_t total = s ? strtoull(s, NULL, 10) : (512UL << 20);
    size_t chunk = 16UL << 20, done = 0;
    while (done < total) {
        char *p = mmap(NULL, chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return blocked("mmap");
        for (size_t i = 0; i < chunk; i += 4096) p[i] = 1;
        done += chunk;
    }
    snprintf(detail, sizeof detail, "touched %zu MiB", done >> 20);
    return ALLOWED;
}

/* ---- set-id bits through every call that sets a mode (hole 10) ----------
 * Each makes one file or directory in a fresh scratch directory, asks for a
 * set-id bit, checks whether it stuck, and removes it. `allowed` means a
 * set-id file now existed; a call that succeeded without the bit sticking
 * is reported as blocked "(bit not set)". */

static int setid_result(const char *call, long r, const char *path) {
    int e = errno;
    struct stat st;
    int stuck = r == 0 && lstat(path, &st) == 0 && (st.st_mode & S_ISUID);
    if (r == 0) unlink(path);
    errno = e;
    if (stuck) return allowed(call);
    if (r == 0) { errno = EPERM; return blocked("(bit not set)"); }
    return blocked(call);
}

/* mkdir: Linux keeps only S_ISVTX of the requested bits (a set-group-id
 * directory comes from its parent), so the filter is what is probed here:
 * `allowed` when mkdir with S_ISGID requested went through at all. */
static int mkdir_result(const char *call, long r, const char *path) {
    int e = errno;
    struct stat st;
    int stuck = r == 0 && stat(path, &st) == 0 && (st.st_mode & S_ISGID);
    if (r == 0) rmdir(path);
    errno = e;
    if (r != 0) return blocked(call);
    snprintf(detail, sizeof detail, "%s succeeded (S_ISGID %s)", call, stuck ? "set" : "dropped by the kernel");
    return ALLOWED;
}

enum { RETURNS_FD = 1, MAKES_DIR = 2 };

/* One set-id request: `make` creates PATH in a fresh scratch directory. */
static int setid_probe(long (*make)(const char *path), int kind, const char *call) {
    char dir[256], path[300];
    if (make_scratch(dir, sizeof dir, "setid")) return SETUP;
    snprintf(path, sizeof path, "%s/x", dir);
    long r = make(path);
    if ((kind & RETURNS_FD) && r >= 0) { close((int)r); r = 0; }
    int v = (kind & MAKES_DIR) ? mkdir_result(call, r, path) : setid_result(call, r, path);
    rmdir(dir);
    return v;
}

#define NEW_FILE (O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC)

static long make_open(const char *p) { return syscall(SYS_open, p, NEW_FILE, 04755); }
static long make_openat(const char *p) { return syscall(SYS_openat, AT_FDCWD, p, NEW_FILE, 04755); }
static long make_creat(const char *p) { return syscall(SYS_creat, p, 04755); }
static long make_openat2(const char *p) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = NEW_FILE;
    how.mode = 04755;
    return syscall(SYS_openat2, AT_FDCWD, p, &how, sizeof how);
}
static long make_mknod(const char *p) { return syscall(SYS_mknod, p, S_IFREG | 04755, 0); }
static long make_mknodat(const char *p) { return syscall(SYS_mknodat, AT_FDCWD, p, S_IFREG | 04755, 0); }
static long make_mkdir(const char *p) { return syscall(SYS_mkdir, p, 02755); }
static long make_mkdirat(const char *p) { return syscall(SYS_mkdirat, AT_FDCWD, p, 02755); }

static int p_open_creat_suid(void) { return setid_probe(make_open, RETURNS_FD, "open(O_CREAT, 04755)"); }
static int p_openat_creat_suid(void) { return setid_probe(make_openat, RETURNS_FD, "openat(O_CREAT, 04755)"); }
static int p_creat_suid(void) { return setid_probe(make_creat, RETURNS_FD, "creat(04755)"); }
static int p_openat2_creat_suid(void) { return setid_probe(make_openat2, RETURNS_FD, "openat2(O_CREAT, 04755)"); }
static int p_mknod_suid(void) { return setid_probe(make_mknod, 0, "mknod(S_IFREG|04755)"); }
static int p_mknodat_suid(void) { return setid_probe(make_mknodat, 0, "mknodat(S_IFREG|04755)"); }
static int p_mkdir_sgid(void) { return setid_probe(make_mkdir, MAKES_DIR, "mkdir(02755)"); }
static int p_mkdirat_sgid(void) { return setid_probe(make_mkdirat, MAKES_DIR, "mkdirat(02755)"); }

static int p_open_tmpfile_suid(void) {
    /* An unnamed file: it vanishes on close; fstat shows its mode. */
    char dir[256];
    if (make_scratch(dir, sizeof dir, "setid")) return SETUP;
    long fd = syscall(SYS_openat, AT_FDCWD, dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 04755);
    int e = errno;
    struct stat st;
    int stuck = fd >= 0 && fstat(fd, &st) == 0 && (st.st_mode & S_ISUID);
    if (fd >= 0) close(fd);
    rmdir(dir);
    errno = e;
    if (stuck) return allowed("openat(O_TMPFILE, 04755)");
    if (fd >= 0) { errno = EPERM; return blocked("(bit not set)"); }
    if (e == EOPNOTSUPP || e == EISDIR) { snprintf(detail, sizeof detail, "O_TMPFILE unsupported here (%s)", strerrorname_np(e)); return SETUP; }
    return blocked("openat(O_TMPFILE)");
}

/* ---- defence in depth (hole 11) ------------------------------------------ */

static int open_own_pty(int *master, int *slave) {
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0) return -1;
    char *name = (grantpt(m) == 0 && unlockpt(m) == 0) ? ptsname(m) : NULL;
    int s = name ? open(name, O_RDWR | O_NOCTTY | O_CLOEXEC) : -1;
    if (s < 0) { close(m); return -1; }
    *master = m;
    *slave = s;
    return 0;
}

/* Where no pty can be opened (Landlock keeping /dev/ptmx read-only, say),
 * ask the filter alone, on a pipe: past the filter the kernel answers
 * ENOTTY and nothing happens -- but a terminal the workload inherited
 * would have taken the request, so that is "allowed". */
static int filter_only(unsigned long request, const char *call, int open_errno) {
    int pfd[2];
    char c = request == TIOCLINUX ? 6 /* TIOCL_GETSHIFTSTATE */ : 'x';
    if (pipe2(pfd, O_CLOEXEC)) return SETUP;
    int r = ioctl(pfd[0], request, &c);
    int e = errno;
    close(pfd[0]); close(pfd[1]);
    if (r == 0) return allowed(call);
    if (e == ENOTTY) {
        snprintf(detail, sizeof detail, "%s passed the filter (no pty here: %s; an inherited "
                 "terminal would take it)", call, strerrorname_np(open_errno));
        return ALLOWED;
    }
    errno = e;
    return blocked(call);
}

/* TIOCSTI pushes a byte into a terminal's input as if typed. Only into a
 * pseudo-terminal made here, which a grandchild in a new session takes as
 * its controlling terminal (the kernel's condition for TIOCSTI without
 * CAP_SYS_ADMIN). `request` may carry bits above 32, which the kernel
 * ignores: a filter comparing all 64 bits would miss it. */
static int tiocsti(unsigned long request, const char *call) {
    int m, s, pfd[2];
    if (open_own_pty(&m, &s)) return filter_only(request, call, errno);
    if (pipe2(pfd, O_CLOEXEC)) return SETUP;
    pid_t pid = fork();
    if (pid < 0) return SETUP;
    if (pid == 0) {
        int e = 0;
        char c = 'x';
        if (setsid() < 0 || ioctl(s, TIOCSCTTY, 0) < 0) e = -errno;
        else if (ioctl(s, request, &c) < 0) e = errno;
        ssize_t w = write(pfd[1], &e, sizeof e);
        (void)w;
        _exit(0);
    }
    close(pfd[1]);
    int e = 0, st;
    ssize_t n = read(pfd[0], &e, sizeof e);
    waitpid(pid, &st, 0);
    close(pfd[0]); close(s); close(m);
    if (WIFSIGNALED(st)) { errno = EPERM; return blocked("(killed)"); }
    if (n != sizeof e) { snprintf(detail, sizeof detail, "no report from the pty child"); return SETUP; }
    if (e < 0) { errno = -e; snprintf(detail, sizeof detail, "cannot take the pty as controlling terminal: %s", strerrorname_np(-e)); return SETUP; }
    if (e == 0) { snprintf(detail, sizeof detail, "%s injected a byte into its own pty", call); return ALLOWED; }
    errno = e;
    return blocked(call);
}

static int p_tiocsti(void) { return tiocsti(TIOCSTI, "ioctl(TIOCSTI)"); }
static int p_tiocsti_high_bits(void) { return tiocsti((1UL << 32) | TIOCSTI, "ioctl(1<<32|TIOCSTI)"); }

static int p_tioclinux(void) {
    /* Read-only subcode (shift state) on our own pty: a pty has no console,
     * so past the filter the kernel answers ENOTTY and nothing happens. */
    int m, s;
    if (open_own_pty(&m, &s)) return filter_only(TIOCLINUX, "ioctl(TIOCLINUX)", errno);
    char sub = 6; /* TIOCL_GETSHIFTSTATE */
    int r = ioctl(s, TIOCLINUX, &sub);
    int e = errno;
    close(s); close(m);
    if (r == 0) return allowed("ioctl(TIOCLINUX)");
    errno = e;
    return past_permission("ioctl(TIOCLINUX)");
}

static int p_socket_families(void) {
    /* Families outside restricted's allow-list (unix, inet, inet6,
     * netlink); AF_PACKET has its own probe. Created and closed at once. */
    static const struct { int family; const char *name; } fams[] = {
        {AF_VSOCK, "AF_VSOCK"}, {AF_ALG, "AF_ALG"}, {AF_KEY, "AF_KEY"}, {AF_XDP, "AF_XDP"},
    };
    static const int types[] = {SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET, SOCK_RAW};
    char got[256] = "";
    int e = 0;
    for (size_t i = 0; i < sizeof fams / sizeof fams[0]; i++)
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
            int fd = socket(fams[i].family, types[t] | SOCK_CLOEXEC, 0);
            if (fd >= 0) {
                close(fd);
                if (!strstr(got, fams[i].name)) { strcat(got, " "); strcat(got, fams[i].name); }
            } else if (e == 0 || errno == EPERM) {
                e = errno;
            }
        }
    if (got[0]) { snprintf(detail, sizeof detail, "socket() succeeded for%s", got); return ALLOWED; }
    errno = e;
    return blocked("socket(AF_VSOCK|AF_ALG|AF_KEY|AF_XDP)");
}

static int p_modify_ldt(void) {
    /* func 0 reads the LDT: nothing changes even when it gets through. */
    char buf[16];
    long r = syscall(SYS_modify_ldt, 0, buf, sizeof buf);
    return r >= 0 ? allowed("modify_ldt(read)") : blocked("modify_ldt");
}

static size_t memlock_bytes(void) {
    const char *s = getenv("PROBE_MEMLOCK_BYTES");
    return s && *s ? strtoull(s, NULL, 10) : (32UL << 10);
}

static long lock_with_mlock(void *p, size_t n) { return mlock(p, n); }
static long lock_with_mlock2(void *p, size_t n) { return syscall(SYS_mlock2, p, n, 0); }

static int lock_beyond_limit(long (*lock)(void *, size_t), const char *call) {
    size_t n = memlock_bytes();
    char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return SETUP;
    long r = lock(p, n);
    int e = errno;
    if (r == 0) munlock(p, n);
    munmap(p, n);
    errno = e;
    if (r == 0) { snprintf(detail, sizeof detail, "%s of %zu KiB succeeded", call, n >> 10); return ALLOWED; }
    return blocked(call);
}

static int p_mlock_beyond_limit(void) { return lock_beyond_limit(lock_with_mlock, "mlock"); }
static int p_mlock2_beyond_limit(void) { return lock_beyond_limit(lock_with_mlock2, "mlock2"); }

static int p_mlockall_beyond_limit(void) {
    /* MCL_FUTURE: every later mapping is locked, so mapping the probe size
     * afterwards is what the limit must refuse. */
    size_t n = memlock_bytes();
    if (mlockall(MCL_FUTURE) != 0) return blocked("mlockall(MCL_FUTURE)");
    char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int e = errno;
    munlockall();
    if (p != MAP_FAILED) { munmap(p, n); snprintf(detail, sizeof detail, "%zu KiB locked through mlockall", n >> 10); return ALLOWED; }
    errno = e;
    return blocked("mmap under mlockall(MCL_FUTURE)");
}

static int p_mmap_locked_beyond_limit(void) {
    size_t n = memlock_bytes();
    char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED, -1, 0);
    if (p == MAP_FAILED) return blocked("mmap(MAP_LOCKED)");
    /* The kernel refuses a MAP_LOCKED mapping beyond the limit (EAGAIN);
     * if it is granted, VmLck says how much was locked. */
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long locked_kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmLck:", 6) == 0) locked_kb = atol(line + 6);
    if (f) fclose(f);
    munmap(p, n);
    if (locked_kb >= (long)(n >> 10)) { snprintf(detail, sizeof detail, "mmap(MAP_LOCKED) locked %ld KiB", locked_kb); return ALLOWED; }
    errno = EAGAIN;
    return blocked("mmap(MAP_LOCKED) (not locked)");
}

static int p_name_to_handle_at(void) {
    /* Turns a path into a handle that open_by_handle_at accepts later. */
    struct { unsigned int bytes; int type; unsigned char h[128]; } fh;
    fh.bytes = sizeof fh.h;
    int mount_id;
    long r = syscall(SYS_name_to_handle_at, AT_FDCWD, "/", &fh, &mount_id, 0);
    if (r == 0) return allowed("name_to_handle_at(/)");
    if (errno == EOPNOTSUPP) { snprintf(detail, sizeof detail, "name_to_handle_at passed the filter (EOPNOTSUPP)"); return ALLOWED; }
    return blocked("name_to_handle_at");
}

struct probe { const char *name; int (*fn)(void); };

static const struct probe PROBES[] = {
    {"mount", p_mount},
    {"unshare_user_mount", p_unshare_user_mount},
    {"setns", p_setns},
    {"ptrace_attach", p_ptrace_attach},
    {"add_key", p_add_key},
    {"bpf", p_bpf},
    {"perf_event_open", p_perf_event_open},
    {"io_uring_setup", p_io_uring_setup},
    {"open_by_handle_at", p_open_by_handle_at},
    {"kexec_load", p_kexec_load},
    {"init_module", p_init_module},
    {"reboot", p_reboot},
    {"swapon", p_swapon},
    {"setuid0", p_setuid0},
    {"mknod_block", p_mknod_block},
    {"raw_socket", p_raw_socket},
    {"packet_socket", p_packet_socket},
    {"bind_port_80", p_bind_port_80},
    {"write_root", p_write_root},
    {"write_etc", p_write_etc},
    {"write_proc_sys", p_write_proc_sys},
    {"write_sys", p_write_sys},
    {"read_kcore", p_read_kcore},
    {"x32_syscall", p_x32_syscall},
    {"i386_int80", p_i386_int80},
    {"userfaultfd", p_userfaultfd},
    {"personality_rie", p_personality},
    {"chroot", p_chroot},
    {"settimeofday", p_settimeofday},
    {"syslog", p_syslog},
    {"acct", p_acct},
    {"chmod_suid", p_chmod_suid},
    {"fchmodat2_suid", p_fchmodat2_suid},
    {"listmount", p_listmount},
    {"setxattrat", p_setxattrat},
    {"fork_bomb", p_fork_bomb},
    {"memory_hog", p_memory_hog},
    {"open_creat_suid", p_open_creat_suid},
    {"openat_creat_suid", p_openat_creat_suid},
    {"creat_suid", p_creat_suid},
    {"open_tmpfile_suid", p_open_tmpfile_suid},
    {"openat2_creat_suid", p_openat2_creat_suid},
    {"mknod_suid", p_mknod_suid},
    {"mknodat_suid", p_mknodat_suid},
    {"mkdir_sgid", p_mkdir_sgid},
    {"mkdirat_sgid", p_mkdirat_sgid},
    {"tiocsti", p_tiocsti},
    {"tiocsti_high_bits", p_tiocsti_high_bits},
    {"tioclinux", p_tioclinux},
    {"socket_families", p_socket_families},
    {"modify_ldt", p_modify_ldt},
    {"mlock_beyond_limit", p_mlock_beyond_limit},
    {"mlock2_beyond_limit", p_mlock2_beyond_limit},
    {"mlockall_beyond_limit", p_mlockall_beyond_limit},
    {"mmap_locked_beyond_limit", p_mmap_locked_beyond_limit},
    {"name_to_handle_at", p_name_to_handle_at},
};

static int under_seccomp_filter(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int ok = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "Seccomp:", 8) == 0) ok = atoi(line + 8) == 2;
    fclose(f);
    return ok;
}

static void run_one(const struct probe *p) {
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC)) { perror("pipe"); exit(2); }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) { printf("%s setup-error fork: %s\n", p->name, strerrorname_np(errno)); return; }
    if (pid == 0) {
        setpgid(0, 0);  /* so leftovers (a traced child, forks) die with it */
        close(pipefd[0]);
        detail[0] = 0;
        int r = p->fn();
        ssize_t w = write(pipefd[1], detail, strlen(detail));
        (void)w;
        _exit(r);
    }
    close(pipefd[1]);
    int st;
    waitpid(pid, &st, 0);
    kill(-pid, SIGKILL);
    /* Read after the wait: a leftover grandchild may hold the write end. */
    char buf[512] = {0};
    fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
    ssize_t n = read(pipefd[0], buf, sizeof buf - 1);
    if (n < 0) n = 0;
    buf[n] = 0;
    close(pipefd[0]);
    if (WIFSIGNALED(st))
        printf("%s blocked killed by %s\n", p->name, sigabbrev_np(WTERMSIG(st)) ? sigabbrev_np(WTERMSIG(st)) : "?");
    else if (WEXITSTATUS(st) == ALLOWED)
        printf("%s allowed %s\n", p->name, buf);
    else if (WEXITSTATUS(st) == BLOCKED)
        printf("%s blocked %s\n", p->name, buf);
    else
        printf("%s setup-error %s\n", p->name, buf);
}

int main(int argc, char **argv) {
    if (!under_seccomp_filter()) {
        fprintf(stderr, "probe: refusing to run: not under a seccomp filter (Seccomp: 2)\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    size_t n = sizeof PROBES / sizeof PROBES[0];
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < n; i++) puts(PROBES[i].name);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        int want = argc < 2;
        for (int a = 1; a < argc; a++) if (strcmp(argv[a], PROBES[i].name) == 0) want = 1;
        if (want) run_one(&PROBES[i]);
    }
    return 0;
}
