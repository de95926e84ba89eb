/*
 * How long a new process takes to start inside a cgroup of its own, the two ways the
 * agent can do it (see crates/runops-agent/src/spawn.rs, "Born in its cgroup"):
 *
 *   mode 0: vfork + exec of /bin/true, no cgroup (the floor)
 *   mode 1: a fresh cgroup, clone3(CLONE_VFORK | CLONE_INTO_CGROUP) + exec
 *   mode 3: a fresh cgroup, vfork; the child writes "0" to its cgroup.procs, then execs
 *
 * It times the parent's clone3 call (the parent waits until the child has exec'd), N
 * times with GAP ms between starts, and prints the median and the maximum. Needs root
 * and cgroup v2 at CGROUP_ROOT (default /sys/fs/cgroup/unified, the hybrid layout; use
 * /sys/fs/cgroup on a unified-only machine).
 *
 *   gcc -O2 -o /tmp/cgroup_join crates/runops-bench/probes/cgroup_join.c
 *   for gap in 100 10 0; do for m in 0 1 3; do /tmp/cgroup_join $m 40 $gap; done; done
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODE(0|1|3) N GAP_MS\n", argv[0]);
        return 2;
    }
    int mode = atoi(argv[1]), n = atoi(argv[2]), gap = atoi(argv[3]);
    const char *root = getenv("CGROUP_ROOT") ? getenv("CGROUP_ROOT") : "/sys/fs/cgroup/unified";
    double *took = calloc(n, sizeof *took);
    for (int i = 0; i < n; i++) {
        char dir[512], procs_path[600];
        int dir_fd = -1, procs = -1;
        if (mode != 0) {
            snprintf(dir, sizeof dir, "%s/cgroup-join-%d-%d", root, getpid(), i);
            if (mkdir(dir, 0755) != 0) {
                perror(dir);
                return 1;
            }
            dir_fd = open(dir, O_RDONLY | O_DIRECTORY);
            snprintf(procs_path, sizeof procs_path, "%s/cgroup.procs", dir);
            procs = open(procs_path, O_WRONLY);
        }
        struct clone_args a;
        memset(&a, 0, sizeof a);
        a.flags = CLONE_VFORK | (mode == 1 ? CLONE_INTO_CGROUP : 0);
        a.exit_signal = SIGCHLD;
        a.cgroup = mode == 1 ? (unsigned)dir_fd : 0;
        double t0 = now_ms();
        long pid = syscall(SYS_clone3, &a, sizeof a);
        if (pid == 0) {
            if (mode == 3 && write(procs, "0", 1) != 1)
                _exit(126);
            execl("/bin/true", "true", (char *)NULL);
            _exit(127);
        }
        took[i] = now_ms() - t0;
        if (pid < 0) {
            perror("clone3");
            return 1;
        }
        waitpid(pid, NULL, 0);
        if (mode != 0) {
            close(dir_fd);
            close(procs);
            rmdir(dir);
        }
        usleep(gap * 1000);
    }
    qsort(took, n, sizeof *took, cmp);
    printf("mode %d, gap %d ms: median %.3f ms, max %.3f ms\n", mode, gap, took[n / 2], took[n - 1]);
    return 0;
}
