"""Syscall groups: named sets a policy writes as `@name`.

The table is data: name -> (one-line help, members). A member is a syscall
name or another `@group`; groups expand recursively. The names are our own
(in the spirit of systemd's SystemCallFilter= sets, not copies of them).

Members are written for every architecture at once: `open` has no aarch64
number and `arch_prctl` exists only on x86. When a group is expanded for a
policy, members that exist on none of its architectures are left out (see
enforcer/policy/syscalls.py). Syscalls newer than libseccomp (mseal,
statmount, the *xattrat family, ...) are members like any other: they
resolve through enforcer's table (enforcer/policy/syscall_table.py). A unit test
checks that every member resolves on x86_64 and on aarch64 (table or
libseccomp), and that each one exists on at least one architecture.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Group:
    name: str  # without the @
    help: str
    members: tuple[str, ...]


def _g(name: str, help: str, members: str) -> Group:
    return Group(name, help, tuple(members.split()))


GROUPS: dict[str, Group] = {g.name: g for g in (
    _g("basic-io", "read, write and close open file descriptors",
       "read readv pread64 preadv preadv2 write writev pwrite64 pwritev pwritev2 "
       "close close_range lseek _llseek dup dup2 dup3 sendfile sendfile64 "
       "splice tee vmsplice copy_file_range readahead"),
    _g("file-system", "open, stat, create, rename and remove files and directories",
       "open openat openat2 creat stat stat64 fstat fstat64 lstat lstat64 newfstatat "
       "fstatat64 statx statfs statfs64 fstatfs fstatfs64 access faccessat faccessat2 "
       "getcwd chdir fchdir mkdir mkdirat rmdir rename renameat renameat2 link linkat "
       "unlink unlinkat symlink symlinkat readlink readlinkat chmod fchmod fchmodat "
       "umask truncate truncate64 ftruncate ftruncate64 getdents getdents64 utime utimes "
       "utimensat futimesat fallocate fadvise64 fadvise64_64 fcntl fcntl64 flock fsync "
       "fdatasync sync syncfs sync_file_range inotify_init inotify_init1 "
       "inotify_add_watch inotify_rm_watch memfd_create mknod mknodat ioctl "
       "name_to_handle_at fchmodat2 cachestat file_getattr file_setattr"),
    _g("file-ownership", "change the owner of files",
       "chown chown32 fchown fchown32 fchownat lchown lchown32"),
    _g("xattr", "read and write extended attributes",
       "getxattr lgetxattr fgetxattr listxattr llistxattr flistxattr setxattr "
       "lsetxattr fsetxattr removexattr lremovexattr fremovexattr "
       "setxattrat getxattrat listxattrat removexattrat"),
    _g("process", "create, run, wait for and signal processes and threads",
       "fork vfork clone clone3 execve execveat exit exit_group wait4 waitid waitpid "
       "kill tkill tgkill getpid getppid gettid getpgid setpgid getpgrp getsid setsid "
       "set_tid_address set_robust_list get_robust_list rseq prctl arch_prctl "
       "pidfd_open pidfd_send_signal restart_syscall personality "
       "set_thread_area get_thread_area modify_ldt uretprobe uprobe"),
    _g("signal", "install handlers for, mask and wait for signals",
       "rt_sigaction rt_sigprocmask rt_sigreturn rt_sigsuspend rt_sigpending "
       "rt_sigtimedwait rt_sigtimedwait_time64 rt_sigqueueinfo rt_tgsigqueueinfo "
       "sigaltstack signalfd signalfd4 sigreturn sigprocmask pause"),
    _g("memory", "map, protect and release memory",
       "brk mmap mmap2 munmap mremap mprotect madvise mincore msync mlock mlock2 "
       "munlock mlockall munlockall membarrier remap_file_pages pkey_alloc pkey_free "
       "pkey_mprotect process_mrelease mseal map_shadow_stack"),
    _g("memory-policy", "NUMA memory placement",
       "get_mempolicy set_mempolicy mbind migrate_pages move_pages set_mempolicy_home_node"),
    _g("time", "read clocks, sleep and use timers",
       "clock_gettime clock_gettime64 clock_getres clock_getres_time64 clock_nanosleep "
       "clock_nanosleep_time64 nanosleep gettimeofday time times alarm getitimer "
       "setitimer timer_create timer_delete timer_getoverrun timer_gettime "
       "timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime "
       "timerfd_gettime64 timerfd_settime timerfd_settime64"),
    _g("clock", "set the system clock",
       "settimeofday stime clock_settime clock_settime64 clock_adjtime clock_adjtime64 adjtimex"),
    _g("network", "create sockets, connect, listen, send and receive",
       "socket socketpair socketcall bind listen accept accept4 connect getsockname "
       "getpeername setsockopt getsockopt sendto recvfrom send recv sendmsg recvmsg "
       "sendmmsg recvmmsg recvmmsg_time64 shutdown"),
    _g("ipc", "pipes, futexes, event fds, System V and POSIX message queues, shared memory",
       "pipe pipe2 eventfd eventfd2 futex futex_time64 futex_waitv futex_wake futex_wait "
       "futex_requeue ipc msgget msgsnd "
       "msgrcv msgctl semget semop semtimedop semtimedop_time64 semctl shmget shmat "
       "shmdt shmctl mq_open mq_unlink mq_timedsend mq_timedsend_time64 "
       "mq_timedreceive mq_timedreceive_time64 mq_notify mq_getsetattr"),
    _g("poll", "wait for events on file descriptors",
       "poll ppoll ppoll_time64 select _newselect pselect6 pselect6_time64 "
       "epoll_create epoll_create1 epoll_ctl epoll_wait epoll_pwait epoll_pwait2"),
    _g("aio", "Linux asynchronous I/O (io_setup and friends)",
       "io_setup io_destroy io_submit io_cancel io_getevents io_pgetevents "
       "io_pgetevents_time64"),
    _g("credentials", "read user, group and capability identity",
       "getuid getuid32 geteuid geteuid32 getgid getgid32 getegid getegid32 getresuid "
       "getresuid32 getresgid getresgid32 getgroups getgroups32 capget"),
    _g("setuid", "change user, group or capabilities",
       "setuid setuid32 setgid setgid32 setreuid setreuid32 setregid setregid32 "
       "setresuid setresuid32 setresgid setresgid32 setgroups setgroups32 setfsuid "
       "setfsuid32 setfsgid setfsgid32 capset"),
    _g("resources", "read and change limits, priorities and scheduling",
       "getrlimit ugetrlimit setrlimit prlimit64 getrusage getpriority setpriority "
       "sched_yield sched_getaffinity sched_setaffinity sched_getparam sched_setparam "
       "sched_getscheduler sched_setscheduler sched_get_priority_max "
       "sched_get_priority_min sched_rr_get_interval sched_rr_get_interval_time64 "
       "sched_getattr sched_setattr ioprio_get ioprio_set"),
    _g("system-info", "read host information (uname, sysinfo, random bytes, CPU)",
       "uname sysinfo getrandom getcpu"),
    _g("seccomp", "install further seccomp filters and Landlock rulesets (they only restrict)",
       "seccomp landlock_create_ruleset landlock_add_rule landlock_restrict_self"),
    _g("mount", "mount and unmount file systems, change the root",
       "mount umount umount2 pivot_root chroot fsopen fsconfig fsmount fspick "
       "move_mount open_tree mount_setattr open_tree_attr statmount listmount"),
    _g("namespaces", "create or join namespaces",
       "unshare setns"),
    _g("module", "load and unload kernel modules",
       "init_module finit_module delete_module create_module query_module get_kernel_syms"),
    _g("reboot", "reboot or load a new kernel",
       "reboot kexec_load kexec_file_load"),
    _g("swap", "enable and disable swap", "swapon swapoff"),
    _g("raw-io", "direct hardware port and PCI access",
       "ioperm iopl pciconfig_read pciconfig_write pciconfig_iobase"),
    _g("debug", "trace and inspect other processes",
       "ptrace process_vm_readv process_vm_writev kcmp pidfd_getfd process_madvise "
       "lookup_dcookie"),
    _g("perf", "performance monitoring", "perf_event_open"),
    _g("bpf", "load eBPF programs and maps", "bpf"),
    _g("io-uring", "io_uring asynchronous I/O (a frequent source of kernel bugs)",
       "io_uring_setup io_uring_enter io_uring_register"),
    _g("userfaultfd", "handle page faults in user space (used in kernel exploits)",
       "userfaultfd"),
    _g("keyring", "the kernel key retention service",
       "add_key request_key keyctl"),
    _g("hostname", "set the host and domain name", "sethostname setdomainname"),
    _g("fanotify", "file system wide event monitoring", "fanotify_init fanotify_mark"),
    _g("handle", "open files by handle (bypasses path checks)", "open_by_handle_at"),
    _g("system-admin", "accounting, quotas, kernel log, tty hangup and similar",
       "acct quotactl quotactl_fd syslog vhangup nfsservctl"),
    _g("lsm", "read and set the calling process's Linux Security Module attributes",
       "lsm_get_self_attr lsm_set_self_attr lsm_list_modules"),
    _g("obsolete", "syscalls no current program needs",
       "_sysctl afs_syscall bdflush break ftime getpmsg gtty "
       "idle lock mpx prof profil putpmsg security sgetmask ssetmask stty "
       "sysfs tuxcall ulimit uselib ustat vserver"),
    _g("privileged", "syscalls that need privileges no container should have",
       "@clock @module @reboot @swap @raw-io @mount @system-admin @hostname @handle"),
    _g("default-deny", "everything enforcer's restricted policy denies",
       "@privileged @debug @perf @bpf @io-uring @userfaultfd @keyring @namespaces "
       "@fanotify @obsolete"),
    _g("system-service", "what an ordinary program needs: I/O, files, processes, network",
       "@basic-io @file-system @file-ownership @xattr @process @signal @memory @time "
       "@network @ipc @poll @aio @credentials @setuid @resources @system-info @seccomp"),
)}


def expand(group: str, _seen: tuple[str, ...] = ()) -> list[str]:
    """Every syscall name in `group` (name without @), nested groups expanded.

    Raises KeyError for an unknown group and ValueError for a cycle.
    """
    if group in _seen:
        raise ValueError("group cycle: " + " -> @".join(_seen + (group,)))
    out: list[str] = []
    for member in GROUPS[group].members:
        names = expand(member[1:], _seen + (group,)) if member.startswith("@") else [member]
        for n in names:
            if n not in out:
                out.append(n)
    return out
