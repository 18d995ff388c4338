/* What each piece of a 1 kHz CPU sample costs the interrupted program by
 * itself (issue 8): spin reading the TSC; every gap of 0.2-200 us is time
 * taken from the program by an interruption (longer gaps are the scheduler
 * running someone else, counted apart). One second per mode, modes
 * alternated for ROUNDS rounds, medians. An empty signal handler:
 *   none      nothing (the machine's own background interruptions)
 *   count     perf task-clock event, 1 ms period, no signal (its hrtimer)
 *   signal    ... and O_ASYNC/F_SETSIG signals (an irq_work self-IPI each)
 *   refresh   ... armed one overflow at a time, PERF_EVENT_IOC_REFRESH in
 *             the handler (lineprof before issue 8's cost work)
 *   sigtrap   task-clock with attr.sigtrap: SIGTRAP from task work, no IPI
 *   wall      POSIX timer on CLOCK_MONOTONIC, 1 kHz (signal from the hrtimer)
 *   cputimer  POSIX timer on the thread's CPU clock (fires at the tick)
 *   ring      task-clock sampling into a perf ring buffer (callchain, user
 *             registers, 2 KiB of stack), O_ASYNC signals as in `signal`
 *             (the kernel signals every overflow of an O_ASYNC event,
 *             whatever wakeup_events says); the handler empties the ring
 *   ringquiet the same ring without O_ASYNC: no signal, no IPI; the
 *             spinning thread itself empties the ring when it sees a record
 * This measures only the direct cost; the cache and TLB refill after each
 * interruption comes on top in a real program (bench/sigcost.py).
 * gcc -O2 -o /tmp/interrupt_cost bench/interrupt_cost.c && /tmp/interrupt_cost 5 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/perf_event.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <x86intrin.h>

static volatile long hits, samples;
static int pfd = -1, refresh;
#define RING_PAGES 16
static struct perf_event_mmap_page *volatile ring;
/* Counts and consumes the ring's records (the handler of `ring`). */
static void drain(void) {
  struct perf_event_mmap_page *p = ring;
  if (!p) return;
  uint64_t head = __atomic_load_n(&p->data_head, __ATOMIC_ACQUIRE), tail = p->data_tail;
  char *data = (char *)p + 4096;
  while (tail < head) {
    struct perf_event_header *e = (void *)(data + (tail & (RING_PAGES * 4096 - 1)));
    samples += e->type == PERF_RECORD_SAMPLE;
    tail += e->size;
  }
  __atomic_store_n(&p->data_tail, tail, __ATOMIC_RELEASE);
}
static void on_signal(int s, siginfo_t *i, void *c) {
  hits++;
  drain();
  if (refresh) ioctl(pfd, PERF_EVENT_IOC_REFRESH, 1);
}
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}
static const char *modes[] = {"none", "count", "signal", "refresh", "sigtrap", "wall", "cputimer", "ring", "ringquiet"};
#define NMODES 9
#define MAXR 64
static double stolen[NMODES][MAXR], rate[NMODES][MAXR], preempted[NMODES][MAXR];

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
static double median(double *v, int n) {
  double s[MAXR];
  memcpy(s, v, n * sizeof *v);
  qsort(s, n, sizeof *s, cmp);
  return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 5;
  if (rounds < 1 || rounds > MAXR) return 2;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_signal;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigaction(SIGURG, &sa, 0);
  sigaction(SIGTRAP, &sa, 0);
  double t0 = now();
  uint64_t c0 = __rdtsc();
  while (now() - t0 < 0.2) {}
  double tsc_hz = (__rdtsc() - c0) / (now() - t0);
  uint64_t lo = tsc_hz * 0.2e-6, hi = tsc_hz * 200e-6;
  int tid = syscall(SYS_gettid);
  for (int r = 0; r < rounds; r++)
    for (int m = 0; m < NMODES; m++) {
      const char *mode = modes[m];
      timer_t timer;
      int have_timer = 0;
      hits = 0;
      refresh = !strcmp(mode, "refresh");
      int quiet = !strcmp(mode, "ringquiet");
      if ((m >= 1 && m <= 4) || m >= 7) {
        struct perf_event_attr a;
        memset(&a, 0, sizeof a);
        a.type = PERF_TYPE_SOFTWARE;
        a.size = sizeof a;
        a.config = PERF_COUNT_SW_TASK_CLOCK;
        a.sample_period = 1000000;
        a.exclude_hv = 1;
        a.wakeup_events = 1;
        a.disabled = refresh;
        if (!strcmp(mode, "sigtrap")) a.sigtrap = a.remove_on_exec = 1;
        if (m >= 7) {
          a.sample_type = PERF_SAMPLE_IP | PERF_SAMPLE_TID | PERF_SAMPLE_CALLCHAIN |
                          PERF_SAMPLE_REGS_USER | PERF_SAMPLE_STACK_USER;
          a.sample_regs_user = 1 << 6 | 1 << 7 | 1 << 8; /* bp, sp, ip */
          a.sample_stack_user = 2048;
          a.exclude_callchain_kernel = 1;
          /* ring: as lineprof's O_ASYNC event; ringquiet: no wakeup
           * (an irq_work self-IPI) ever */
          a.wakeup_events = m == 7 ? 16 : 1 << 30;
        }
        pfd = syscall(SYS_perf_event_open, &a, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
        if (pfd < 0) { perror("perf_event_open"); return 1; }
        if (m >= 7) {
          void *r = mmap(0, (1 + RING_PAGES) * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, pfd, 0);
          if (r == MAP_FAILED) { perror("mmap"); return 1; }
          ring = r;
        }
        if (!strcmp(mode, "signal") || refresh || m == 7) {
          struct f_owner_ex o = {F_OWNER_TID, tid};
          fcntl(pfd, F_SETFL, O_ASYNC);
          fcntl(pfd, F_SETSIG, SIGURG);
          fcntl(pfd, F_SETOWN_EX, &o);
        }
        if (refresh) ioctl(pfd, PERF_EVENT_IOC_REFRESH, 1);
      } else if (m == 5 || m == 6) {
        struct sigevent ev;
        memset(&ev, 0, sizeof ev);
        ev.sigev_notify = SIGEV_THREAD_ID;
        ev.sigev_signo = SIGURG;
        ev._sigev_un._tid = tid;
        have_timer = !timer_create(m == 5 ? CLOCK_MONOTONIC : CLOCK_THREAD_CPUTIME_ID, &ev, &timer);
        struct itimerspec it = {{0, 1000000}, {0, 1000000}};
        timer_settime(timer, 0, &it, 0);
      }
      uint64_t start = __rdtsc(), last = start, end = start + (uint64_t)tsc_hz, gaps = 0, away = 0;
      while (last < end) {
        uint64_t t = __rdtsc(), d = t - last;
        if (d > lo && d < hi) gaps += d;
        else if (d >= hi) away += d;
        last = t;
        if (quiet && __atomic_load_n(&ring->data_head, __ATOMIC_ACQUIRE) != ring->data_tail)
          drain();
      }
      double run = (double)(last - start - away);
      stolen[m][r] = gaps / run * 100;
      rate[m][r] = hits / (run / tsc_hz);
      preempted[m][r] = away * 100.0 / (last - start);
      if (pfd >= 0) { close(pfd); pfd = -1; }
      if (ring) {
        drain();
        rate[m][r] = samples / (run / tsc_hz);
        void *map = ring;
        ring = 0;
        munmap(map, (1 + RING_PAGES) * 4096);
        samples = 0;
      }
      if (have_timer) timer_delete(timer);
      refresh = 0;
    }
  double base = median(stolen[0], rounds);
  printf("%d rounds of 1 s per mode, medians; TSC %.0f MHz\n", rounds, tsc_hz / 1e6);
  printf("%-9s %9s %11s %12s %12s\n", "mode", "samples/s", "time taken", "above none", "per period");
  for (int m = 0; m < NMODES; m++) {
    double s = median(stolen[m], rounds), n = median(rate[m], rounds);
    /* per 1 ms period: the timer modes fire at the kernel tick */
    double periods = m == 6 ? (n > 0 ? n : 1) : 1000;
    printf("%-9s %9.0f %10.2f%% %11.2f%% %9.1f us   (preempted %.1f%%)\n", modes[m], n, s, s - base,
           m ? (s - base) / 100 / periods * 1e6 : 0.0, median(preempted[m], rounds));
  }
  return 0;
}
