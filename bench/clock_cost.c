/* What one clock read costs on this machine: rdtsc, clock_gettime and
 * rdtscp in a loop. The floor under a #[lineprof::profile] line hit.
 * gcc -O2 -o /tmp/clock_cost bench/clock_cost.c && /tmp/clock_cost */
#include <stdio.h>
#include <time.h>
#include <x86intrin.h>
int main(){ struct timespec a,b; unsigned long long s=0; int N=20000000;
clock_gettime(CLOCK_MONOTONIC,&a); for(int i=0;i<N;i++) s+=__rdtsc(); clock_gettime(CLOCK_MONOTONIC,&b);
printf("rdtsc %.2f ns\n", ((b.tv_sec-a.tv_sec)*1e9+(b.tv_nsec-a.tv_nsec))/N);
struct timespec t; clock_gettime(CLOCK_MONOTONIC,&a); for(int i=0;i<N;i++){clock_gettime(CLOCK_MONOTONIC,&t); s+=t.tv_nsec;} clock_gettime(CLOCK_MONOTONIC,&b);
printf("clock_gettime %.2f ns\n", ((b.tv_sec-a.tv_sec)*1e9+(b.tv_nsec-a.tv_nsec))/N);
unsigned int aux; clock_gettime(CLOCK_MONOTONIC,&a); for(int i=0;i<N;i++) s+=__rdtscp(&aux); clock_gettime(CLOCK_MONOTONIC,&b);
printf("rdtscp %.2f ns\n", ((b.tv_sec-a.tv_sec)*1e9+(b.tv_nsec-a.tv_nsec))/N);
return s==1;}
