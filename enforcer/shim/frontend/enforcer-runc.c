/*
 * enforcer-runc: the compiled front end of enforcer's OCI runtime shim.
 *
 * Why this exists: a container runtime is started for every container
 * operation, and starting a Python interpreter costs ~7 ms of CPU before
 * any shim code runs (more on a loaded or throttled VM). So the shim's
 * logic lives in one place, the Python shim (enforcer/shim/main.py), and
 * runs either
 *   - in `enforcer-shimd` (enforcer/shim/server.py), a resident process
 *     that already has the shim imported: this program forwards its
 *     command line, environment and working directory there over a unix
 *     socket, does what the server answers, and ends by exec'ing runc; or
 *   - when no server answers the socket, in the Python shim itself: this
 *     program execs `enforcer-runc-py` (next to itself) with the same
 *     arguments. Same policy, same checks; only slower.
 *
 * This program decides nothing about policy. Its whole vocabulary is the
 * protocol below; the server does every check and every write, and a
 * container never starts unless the server said "exec" or "child".
 *
 * Protocol (AF_UNIX SOCK_SEQPACKET: one message per packet; a message is
 * a one-letter tag and fields, each field ended by a NUL byte):
 *   client -> server
 *     R 1 SELF CWD ARGC ARG... ENV...   request (ENV: KEY=VALUE fields), with
 *                                        three descriptors (SCM_RIGHTS): our
 *                                        working directory, our root and our
 *                                        mount namespace
 *     s SESSION                          answer to S (empty: none)
 *     c CODE                             runc child ended: exit code, or 128+signal
 *     f ERROR                            runc child could not be started
 *   server -> client
 *     W LINE          print LINE on stderr and go on
 *     S               start a new audit session in this process (the
 *                     container inherits it); answer with s
 *     X PATH ARG...   exec PATH with ARG... as argv (runc keeps our pid)
 *     C PATH ARG...   run PATH as a child, forward signals, answer c or f,
 *                     then wait for the next message
 *     P REASON        run the Python shim here instead (the server's view of
 *                     paths is not ours: another mount namespace or root)
 *     Q CODE          exit with CODE
 *     E LINE [LOG FORMAT]
 *                     print "enforcer-runc: LINE" and exit 125; with LOG, also
 *                     append it to runc's --log file LOG in FORMAT (json or
 *                     text) as runc writes its errors: containerd, and so
 *                     Docker, read that file, not our stderr
 * Anything else, or the connection closing without X, Q or E, is an error
 * (exit 125): fail closed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROG "enforcer-runc"
#define APPLY_FAILED 125
/* A directory of its own, root's only: never the registry's /run/enforcer,
 * which the monitor's pod mounts. */
#define DEFAULT_SOCKET "/run/enforcer-shimd/shim.sock"
#define FALLBACK_NAME "enforcer-runc-py"
#define ACTIVE_ENV "ENFORCER_SHIM_ACTIVE"
#define MAX_MESSAGE (4 << 20)
#define MAX_FIELDS 65536
#define REPLY_TIMEOUT_S 300 /* a policy compiled from YAML on a cold cache */
#define VIEW_FDS 3           /* sent with the request: cwd, root, mount namespace */

extern char **environ;

static volatile sig_atomic_t child_pid;

/* One line on stderr, "enforcer-runc: ...", and exit 125: nothing started. */
__attribute__((format(printf, 1, 2), noreturn))
static void die(const char *fmt, ...)
{
    va_list args;

    va_start(args, fmt);
    fputs(PROG ": ", stderr);
    vfprintf(stderr, fmt, args);
    fputc('\n', stderr);
    va_end(args);
    exit(APPLY_FAILED);
}

/* Append "enforcer-runc: LINE" to runc's log file the way runc's logrus
 * formatter writes an error (see enforcer/shim/runclog.py). */
static void write_runc_log(const char *path, const char *format, const char *line)
{
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    FILE *log;
    int json = strcmp(format, "json") == 0;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);

    if (fd < 0)
        return;
    log = fdopen(fd, "a");
    if (!log) {
        close(fd);
        return;
    }
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    fputs(json ? "{\"level\":\"error\",\"msg\":\"" : "time=\"", log);
    if (!json)
        fprintf(log, "%s\" level=error msg=\"", stamp);
    fputs(PROG ": ", log);
    for (const unsigned char *p = (const unsigned char *)line; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(log, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", log);
        else if (*p < 0x20)
            fprintf(log, json ? "\\u%04x" : "\\x%02x", *p);
        else
            fputc(*p, log);
    }
    if (json)
        fprintf(log, "\",\"time\":\"%s\"}\n", stamp);
    else
        fputs("\"\n", log);
    fclose(log);
}

/* -- the Python shim, when no server answers ------------------------------ */

/* Exec the Python shim with our own arguments (never returns). */
static void exec_fallback(char **argv, const char *why)
{
    char path[PATH_MAX];
    const char *explicit = getenv("ENFORCER_SHIM_FALLBACK");

    if (explicit && *explicit) {
        snprintf(path, sizeof path, "%s", explicit);
    } else {
        size_t room = sizeof path - sizeof FALLBACK_NAME - 1;
        ssize_t n = readlink("/proc/self/exe", path, room);
        char *slash;
        if (n < 0 || (size_t)n >= room)
            die("no usable shim server (%s), and /proc/self/exe is unreadable", why);
        path[n] = '\0';
        slash = strrchr(path, '/');
        strcpy(slash ? slash + 1 : path, FALLBACK_NAME);
    }
    argv[0] = path;
    execv(path, argv);
    fprintf(stderr, PROG ": no usable shim server (%s), and the Python shim %s cannot run: %s\n",
            why, path, strerror(errno));
    exit(APPLY_FAILED);
}

/* The server's own settings (SERVER_SETTINGS in server.py) for the Python
 * shim that runs in its place, so that both find the same registry, cache
 * and configuration. Only these names are taken; the server is root's or
 * our own (check_server). */
static void adopt_server_settings(char **settings, size_t count)
{
    static const char *const allowed[] = {
        "ENFORCER_SHIM_CONFIG=", "ENFORCER_RUNTIME_DIR=", "ENFORCER_CACHE_DIR=",
    };
    size_t i, k;

    for (i = 0; i < count; i++) {
        for (k = 0; k < sizeof allowed / sizeof allowed[0]; k++) {
            size_t n = strlen(allowed[k]);
            if (strncmp(settings[i], allowed[k], n) == 0) {
                char name[32];
                memcpy(name, allowed[k], n - 1);
                name[n - 1] = '\0';
                if (setenv(name, settings[i] + n, 1) < 0)
                    die("setenv: %s", strerror(errno));
            }
        }
    }
}

static const char *socket_path(void)
{
    const char *explicit = getenv("ENFORCER_SHIM_SOCKET");

    return explicit && *explicit ? explicit : DEFAULT_SOCKET;
}

/* Obey only a server of root or of our own user: whoever else made a socket
 * at that path (a directory left writable, a path from the environment)
 * must not get to tell us what to execute. */
static void check_server(int fd, const char *path)
{
    struct ucred cred;
    socklen_t len = sizeof cred;

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        die("cannot tell who the shim server at %s is: %s", path, strerror(errno));
    if (cred.uid != 0 && cred.uid != geteuid())
        die("the shim server at %s runs as uid %u, neither root nor this user: "
            "not obeying it", path, (unsigned)cred.uid);
}

/* A connected socket, or -1 after exec'ing the fallback (never returns then). */
static int connect_server(char **argv)
{
    const char *path = socket_path();
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    struct timeval timeout = {.tv_sec = REPLY_TIMEOUT_S};
    int fd;

    if (strlen(path) >= sizeof addr.sun_path)
        die("socket path %s is too long", path);
    strcpy(addr.sun_path, path);
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        /* No server (not installed, not started, gone, or not ours to use:
         * the socket is its owner's only): the Python shim does the work. */
        if (errno == ENOENT || errno == ECONNREFUSED || errno == ENOTDIR ||
            errno == EACCES || errno == EPERM)
            exec_fallback(argv, strerror(errno));
        die("cannot reach the shim server at %s: %s", path, strerror(errno));
    }
    check_server(fd, path);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    return fd;
}

/* -- messages ------------------------------------------------------------- */

struct buffer {
    char *data;
    size_t len, cap;
};

static void put(struct buffer *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap)
            cap *= 2;
        b->data = realloc(b->data, cap);
        if (!b->data)
            die("out of memory");
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len++] = '\0';
}

static void put_str(struct buffer *b, const char *s) { put(b, s, strlen(s)); }

static void send_message(int fd, const struct buffer *b)
{
    if (send(fd, b->data, b->len, MSG_NOSIGNAL) != (ssize_t)b->len)
        die("cannot talk to the shim server: %s", strerror(errno));
}

static void send_fields(int fd, const char *tag, const char *value)
{
    struct buffer b = {0};
    put_str(&b, tag);
    put_str(&b, value);
    send_message(fd, &b);
    free(b.data);
}

/* Send the request with descriptors of our view of the system attached:
 * our working directory, our root and our mount namespace. The server
 * compares the last two with its own and works in the first, so it needs
 * no ptrace access to our /proc entries to know what our paths mean. */
static ssize_t send_with_view(int fd, const struct buffer *b, char **argv)
{
    static const char *const paths[VIEW_FDS] = {".", "/", "/proc/self/ns/mnt"};
    int view[VIEW_FDS];
    char control[CMSG_SPACE(sizeof view)] = {0};
    struct iovec iov = {.iov_base = b->data, .iov_len = b->len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = control, .msg_controllen = sizeof control};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    ssize_t sent;
    int saved;

    for (int i = 0; i < VIEW_FDS; i++) {
        view[i] = open(paths[i], O_PATH | O_CLOEXEC);
        if (view[i] < 0) /* no /proc, say: the Python shim needs no server */
            exec_fallback(argv, "cannot describe this process to the shim server");
    }
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof view);
    memcpy(CMSG_DATA(cmsg), view, sizeof view);
    sent = sendmsg(fd, &msg, MSG_NOSIGNAL);
    saved = errno;
    for (int i = 0; i < VIEW_FDS; i++)
        close(view[i]);
    errno = saved;
    return sent;
}

static void send_request(int fd, int argc, char **argv)
{
    struct buffer b = {0};
    char self[PATH_MAX], cwd[PATH_MAX], count[16];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);

    /* Unknown (or too long to be sure of): the server then only cannot skip
     * a `runc` on PATH that is this program, and the loop guard catches that. */
    self[n > 0 && (size_t)n < sizeof self - 1 ? n : 0] = '\0';
    if (!getcwd(cwd, sizeof cwd))
        die("cannot read the working directory: %s", strerror(errno));
    snprintf(count, sizeof count, "%d", argc - 1);
    put_str(&b, "R");
    put_str(&b, "1");
    put_str(&b, self);
    put_str(&b, cwd);
    put_str(&b, count);
    for (int i = 1; i < argc; i++)
        put_str(&b, argv[i]);
    for (char **e = environ; *e; e++)
        put_str(&b, *e);
    if (b.len > MAX_MESSAGE) {
        free(b.data);
        exec_fallback(argv, "request too large for the socket");
    }
    if (send_with_view(fd, &b, argv) != (ssize_t)b.len) {
        if (errno == EMSGSIZE) {
            free(b.data);
            exec_fallback(argv, "request too large for the socket");
        }
        die("cannot talk to the shim server: %s", strerror(errno));
    }
    free(b.data);
}

/* Receive one message; split it into NUL-ended fields. Returns the count. */
static int receive(int fd, char *buf, size_t size, char **fields)
{
    ssize_t n = recv(fd, buf, size, MSG_TRUNC);
    int count = 0;

    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        die("the shim server did not answer in %d s", REPLY_TIMEOUT_S);
    if (n < 0)
        die("cannot talk to the shim server: %s", strerror(errno));
    if (n == 0)
        die("the shim server closed the connection without an answer");
    if ((size_t)n > size || buf[n - 1] != '\0')
        die("malformed message from the shim server");
    for (char *p = buf; p < buf + n; p += strlen(p) + 1) {
        if (count == MAX_FIELDS - 1)
            die("message from the shim server has too many fields");
        fields[count++] = p;
    }
    fields[count] = NULL;
    return count;
}

/* -- what the server asks for --------------------------------------------- */

static unsigned long read_number(const char *path, unsigned long fallback)
{
    char text[32] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return fallback;
    n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0)
        return fallback;
    return strtoul(text, NULL, 10);
}

/* A fresh audit session (see enforcer/audit_session.py): write our login
 * uid (or real uid when none is set) back to /proc/self/loginuid. */
static void start_audit_session(int fd)
{
    const unsigned long unset = 4294967295UL;
    unsigned long loginuid = read_number("/proc/self/loginuid", unset);
    unsigned long session;
    char text[32];
    int out, ok;

    if (loginuid == unset)
        loginuid = getuid();
    snprintf(text, sizeof text, "%lu", loginuid);
    out = open("/proc/self/loginuid", O_WRONLY | O_CLOEXEC);
    ok = out >= 0 && write(out, text, strlen(text)) == (ssize_t)strlen(text);
    if (out >= 0)
        close(out);
    session = ok ? read_number("/proc/self/sessionid", unset) : unset;
    if (session == unset)
        text[0] = '\0';
    else
        snprintf(text, sizeof text, "%lu", session);
    send_fields(fd, "s", text);
}

static void forward_signal(int signum)
{
    if (child_pid > 0)
        kill(child_pid, signum);
}

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
#define N_FORWARDED (sizeof forwarded / sizeof forwarded[0])

/* Run runc as our child, forwarding signals; report how it ended. */
static void run_child(int fd, char **fields)
{
    struct sigaction action = {.sa_handler = forward_signal}, previous[N_FORWARDED];
    sigset_t forwarded_set, old_mask;
    posix_spawnattr_t attr;
    char code[16];
    pid_t pid;
    int status, err;

    /* Signals that arrive before the child's pid is known are held, then
     * forwarded; the child itself starts with our original mask. */
    sigemptyset(&forwarded_set);
    for (size_t i = 0; i < N_FORWARDED; i++)
        sigaddset(&forwarded_set, forwarded[i]);
    sigprocmask(SIG_BLOCK, &forwarded_set, &old_mask);
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    for (size_t i = 0; i < N_FORWARDED; i++)
        sigaction(forwarded[i], &action, &previous[i]);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setsigmask(&attr, &old_mask);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    err = posix_spawn(&pid, fields[1], NULL, &attr, fields + 2, environ);
    posix_spawnattr_destroy(&attr);
    if (err) {
        for (size_t i = 0; i < N_FORWARDED; i++)
            sigaction(forwarded[i], &previous[i], NULL);
        sigprocmask(SIG_SETMASK, &old_mask, NULL);
        send_fields(fd, "f", strerror(err));
        return;
    }
    child_pid = pid;
    sigprocmask(SIG_SETMASK, &old_mask, NULL);
    /* Wait without reaping first: while runc is a zombie its pid cannot be
     * reused, so a signal forwarded in the meantime cannot hit a stranger. */
    {
        siginfo_t info;
        while (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOWAIT) < 0) {
            if (errno != EINTR)
                die("waiting for runc: %s", strerror(errno));
        }
    }
    child_pid = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            die("waiting for runc: %s", strerror(errno));
    }
    for (size_t i = 0; i < N_FORWARDED; i++)
        sigaction(forwarded[i], &previous[i], NULL);
    snprintf(code, sizeof code, "%d",
             WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status));
    send_fields(fd, "c", code);
}

int main(int argc, char **argv)
{
    static char buf[MAX_MESSAGE];
    static char *fields[MAX_FIELDS];
    int fd = connect_server(argv);

    send_request(fd, argc, argv);
    for (;;) {
        int count = receive(fd, buf, sizeof buf, fields);
        const char *tag = fields[0];

        if (count < 1 || strlen(tag) != 1)
            die("malformed message from the shim server");
        switch (tag[0]) {
        case 'W':
            if (count >= 2)
                fprintf(stderr, "%s\n", fields[1]);
            break;
        case 'S':
            start_audit_session(fd);
            break;
        case 'X':
        case 'C':
            if (count < 3)
                die("malformed message from the shim server");
            if (setenv(ACTIVE_ENV, "1", 1) < 0)
                die("setenv: %s", strerror(errno));
            if (tag[0] == 'C') {
                run_child(fd, fields);
                break;
            }
            execv(fields[1], fields + 2);
            die("cannot execute %s: %s", fields[1], strerror(errno));
            break;
        case 'P':
            close(fd);
            adopt_server_settings(fields + 2, count > 2 ? count - 2 : 0);
            exec_fallback(argv, count >= 2 ? fields[1] : "the server said so");
            break;
        case 'Q':
            exit(count >= 2 ? atoi(fields[1]) : APPLY_FAILED);
        case 'E':
            if (count >= 4 && *fields[2])
                write_runc_log(fields[2], fields[3], count >= 2 ? fields[1] : "");
            die("%s", count >= 2 ? fields[1] : "shim server error");
            break;
        default:
            die("unknown message %s from the shim server", tag);
        }
    }
}
