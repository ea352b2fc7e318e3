/*
 * enforcer-landlock: applies a Landlock ruleset to itself, then execs the
 * container's process. runc has no Landlock support, so for a policy with
 * a `landlock` section the shim (enforcer/shim/landlock.py) bind-mounts
 * this static program read-only into the container and makes it the first
 * program of the container's process and of every `runc exec` process:
 *
 *   enforcer-landlock [OPTIONS] -- PROGRAM [ARG...]
 *     -f MASK         handled filesystem rights (hex, LANDLOCK_ACCESS_FS_*)
 *     -n MASK         handled network rights (hex, LANDLOCK_ACCESS_NET_*)
 *     -s MASK         scopes (hex, LANDLOCK_SCOPE_*)
 *     -l FLAGS        landlock_restrict_self flags (hex)
 *     -p MASK:PATH    allow MASK beneath PATH; PATH must exist
 *     -o MASK:PATH    the same, skipped when PATH does not exist
 *     -b PORT         allow binding TCP PORT
 *     -c PORT         allow connecting to TCP PORT
 *     -w LINE         print "enforcer-landlock: LINE" on stderr first
 *
 * It decides nothing: the shim has already fitted the policy to this
 * kernel's ABI (enforcer/landlock.py `effective`), so every mask here is
 * one the kernel knows. All masks zero means "this kernel has no Landlock
 * and the policy accepts that" (best effort; -w says so): PROGRAM is
 * executed unconfined. Paths are the container's: this runs inside it,
 * after runc's mounts and pivot_root, so a symlink in the image resolves
 * within the container's root. A path that resolves to the root directory
 * itself (other than "/") is refused: a symlink must not widen a grant for
 * one directory into the whole tree.
 *
 * Fail closed: any error (a bad option, a missing required path, a
 * syscall the container's seccomp filter blocks) prints one line
 * "enforcer-landlock: ..." and exits 125; PROGRAM never runs unconfined.
 * Exec failures exit 126 (cannot execute) or 127 (not found), like a shell.
 *
 * Built static (`python -m enforcer.shim.frontend --landlock OUTPUT`): it
 * runs in any image, with or without a C library.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PROG "enforcer-landlock"
#define APPLY_FAILED 125
#define CANNOT_EXECUTE 126
#define NOT_FOUND 127

/* The unified syscall numbers (x86_64 and the asm-generic architectures). */
#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#endif
#ifndef SYS_landlock_add_rule
#define SYS_landlock_add_rule 445
#endif
#ifndef SYS_landlock_restrict_self
#define SYS_landlock_restrict_self 446
#endif
#ifndef PR_SET_NO_NEW_PRIVS
#define PR_SET_NO_NEW_PRIVS 38
#endif
#ifndef PR_GET_NO_NEW_PRIVS
#define PR_GET_NO_NEW_PRIVS 39
#endif

#define RULE_PATH_BENEATH 1
#define RULE_NET_PORT 2
/* The rights that mean something on a file, not a directory: execute,
 * write_file, read_file, truncate, ioctl_dev. */
#define FS_FILE_RIGHTS ((1ULL << 0) | (1ULL << 1) | (1ULL << 2) | (1ULL << 14) | (1ULL << 15))

/* Our own copies of the kernel's structures (the build host's header may
 * be older than the kernel the containers run on). */
struct ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
};

struct path_beneath_attr {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__((packed));

struct net_port_attr {
    uint64_t allowed_access;
    uint64_t port;
};

__attribute__((format(printf, 2, 3), noreturn))
static void die(int status, const char *fmt, ...)
{
    va_list args;
    char line[1024];
    int n = snprintf(line, sizeof(line), "%s: ", PROG);
    va_start(args, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, args);
    va_end(args);
    size_t len = strlen(line);
    if (len < sizeof(line) - 1)
        line[len++] = '\n';
    ssize_t ignored = write(2, line, len);
    (void)ignored;
    _exit(status);
}

static uint64_t parse_hex(const char *text, const char *what)
{
    char *end;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 16);
    if (errno || end == text || *end || text[0] == '-')
        die(APPLY_FAILED, "%s: %s is not a hexadecimal mask", what, text);
    return value;
}

static uint64_t parse_port(const char *text)
{
    char *end;
    errno = 0;
    unsigned long value = strtoul(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-' || value > 65535)
        die(APPLY_FAILED, "%s is not a TCP port", text);
    return value;
}

static const char *blocked_hint(int err)
{
    /* A seccomp filter that does not allow the landlock syscalls answers
     * with its errno (EPERM) or ENOSYS. */
    return (err == EPERM || err == ENOSYS) ? " (does the container's seccomp filter allow "
                                              "the landlock syscalls?)" : "";
}

static void add_path_rule(int ruleset, const char *spec, int optional, const struct stat *root)
{
    char *colon = strchr(spec, ':');
    if (!colon || colon == spec)
        die(APPLY_FAILED, "rule %s: expected MASK:PATH", spec);
    char mask_text[32];
    size_t mask_len = (size_t)(colon - spec);
    if (mask_len >= sizeof(mask_text))
        die(APPLY_FAILED, "rule %s: expected MASK:PATH", spec);
    memcpy(mask_text, spec, mask_len);
    mask_text[mask_len] = 0;
    uint64_t access = parse_hex(mask_text, "rule");
    const char *path = colon + 1;
    if (path[0] != '/')
        die(APPLY_FAILED, "rule path %s is not absolute", path);

    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT && optional)
            return;
        die(APPLY_FAILED, "landlock: %s: %s%s", path, strerror(errno),
            errno == ENOENT ? " (mark it optional in the policy if it may be missing)" : "");
    }
    struct stat st;
    if (fstat(fd, &st) != 0)
        die(APPLY_FAILED, "landlock: %s: fstat: %s", path, strerror(errno));
    if (strcmp(path, "/") != 0 && st.st_dev == root->st_dev && st.st_ino == root->st_ino)
        die(APPLY_FAILED, "landlock: %s: resolves to / (through a symlink); write / if the "
                          "whole tree is meant", path);
    if (!S_ISDIR(st.st_mode))
        access &= FS_FILE_RIGHTS; /* the kernel refuses directory rights on a file */
    if (access) {
        struct path_beneath_attr rule = {.allowed_access = access, .parent_fd = fd};
        if (syscall(SYS_landlock_add_rule, ruleset, RULE_PATH_BENEATH, &rule, 0) != 0)
            die(APPLY_FAILED, "landlock: landlock_add_rule(%s, %#" PRIx64 "): %s", path, access,
                strerror(errno));
    }
    close(fd);
}

static void add_port_rule(int ruleset, uint64_t right, const char *text)
{
    struct net_port_attr rule = {.allowed_access = right, .port = parse_port(text)};
    if (syscall(SYS_landlock_add_rule, ruleset, RULE_NET_PORT, &rule, 0) != 0)
        die(APPLY_FAILED, "landlock: landlock_add_rule(port %s): %s", text, strerror(errno));
}

int main(int argc, char **argv)
{
    struct ruleset_attr attr = {0};
    uint64_t flags = 0;
    const char *warning = NULL;
    int separator = -1;

    /* Pass 1: the masks (the ruleset must exist before its rules). */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            separator = i;
            break;
        }
        if (argv[i][0] != '-' || !argv[i][1] || argv[i][2] || i + 1 >= argc)
            die(APPLY_FAILED, "bad option %s (usage: %s [OPTIONS] -- PROGRAM [ARG...])",
                argv[i], PROG);
        const char *value = argv[++i];
        switch (argv[i - 1][1]) {
        case 'f': attr.handled_access_fs = parse_hex(value, "-f"); break;
        case 'n': attr.handled_access_net = parse_hex(value, "-n"); break;
        case 's': attr.scoped = parse_hex(value, "-s"); break;
        case 'l': flags = parse_hex(value, "-l"); break;
        case 'w': warning = value; break;
        case 'p': case 'o': case 'b': case 'c': break; /* pass 2 */
        default:
            die(APPLY_FAILED, "unknown option %s", argv[i - 1]);
        }
    }
    if (separator < 0 || separator + 1 >= argc)
        die(APPLY_FAILED, "no program after -- (usage: %s [OPTIONS] -- PROGRAM [ARG...])", PROG);
    if (warning)
        dprintf(2, "%s: %s\n", PROG, warning);

    if (attr.handled_access_fs || attr.handled_access_net || attr.scoped) {
        int ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0);
        if (ruleset < 0)
            die(APPLY_FAILED, "landlock: landlock_create_ruleset: %s%s", strerror(errno),
                blocked_hint(errno));
        struct stat root;
        if (stat("/", &root) != 0)
            die(APPLY_FAILED, "landlock: stat /: %s", strerror(errno));
        /* Pass 2: the rules. */
        for (int i = 1; i < separator; i += 2) {
            const char *value = argv[i + 1];
            switch (argv[i][1]) {
            case 'p': add_path_rule(ruleset, value, 0, &root); break;
            case 'o': add_path_rule(ruleset, value, 1, &root); break;
            case 'b': add_port_rule(ruleset, 1, value); break; /* LANDLOCK_ACCESS_NET_BIND_TCP */
            case 'c': add_port_rule(ruleset, 2, value); break; /* LANDLOCK_ACCESS_NET_CONNECT_TCP */
            default: break;
            }
        }
        /* The kernel lets a process without CAP_SYS_ADMIN restrict itself
         * only under no_new_privs; the policy requires it anyway (runc set
         * it from process.noNewPrivileges), so this is only a guarantee. */
        if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1 &&
            prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
            die(APPLY_FAILED, "prctl(PR_SET_NO_NEW_PRIVS): %s", strerror(errno));
        if (syscall(SYS_landlock_restrict_self, ruleset, (unsigned int)flags) != 0)
            die(APPLY_FAILED, "landlock: landlock_restrict_self: %s%s", strerror(errno),
                blocked_hint(errno));
        close(ruleset);
    }

    char **program = argv + separator + 1;
    execvp(program[0], program);
    int err = errno;
    die(err == ENOENT ? NOT_FOUND : CANNOT_EXECUTE, "exec %s: %s%s", program[0], strerror(err),
        err == EACCES ? " (Landlock allows executing only beneath landlock.filesystem.execute; "
                        "a dynamically linked program needs its loader there too)" : "");
}
