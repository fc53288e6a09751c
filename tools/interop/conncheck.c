/*
 * conncheck - what does the survivor of a TIPC connection see when the peer
 * goes away?  Runs inside a kernel-TIPC VM of the harness in
 * shared/tools/kernel-tipc; driven by tools/interop/conncheck.sh (see README.md
 * there).  Build: gcc -O2 -Wall -static -s -o conncheck conncheck.c
 *
 * The survivor makes 4 recv() calls (SO_RCVTIMEO 3 s, so EAGAIN means "still
 * blocked after 3 s"), polls, makes 2 send() calls, one more recv(), polls, and
 * reads SO_ERROR.  Every step is printed with a timestamp.
 *
 *   conncheck local STYPE ACTION SURV_ROLE TIMING [TYPE INST]
 *       everything in one VM: main forks a survivor and a peer process.
 *   conncheck surv  STYPE SURV_ROLE TIMING TYPE INST      (cross-VM, survivor side)
 *   conncheck peer  STYPE ACTION PEER_ROLE TYPE INST      (cross-VM, peer side)
 *
 *   STYPE     seq | stream
 *   ACTION    close | shutclose (shutdown(SHUT_RDWR)+close) | send10close |
 *             shutwrclose (shutdown(SHUT_WR)+close) | hold (stay connected, for SIGKILL)
 *             | kill (local only: peer holds, main sends SIGKILL to it) | exit (peer _exit(0)s
 *             without close)
 *   SURV_ROLE listen (survivor binds+accepts, peer connects) | dial (peer listens, survivor connects)
 *   TIMING    early  (survivor is blocked in recv() when the peer goes away)
 *             late   (survivor waits 1s, then polls and calls recv())
 *             sendfirst (survivor waits 1s, then send() before recv())
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/tipc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef AF_TIPC
#define AF_TIPC 30
#endif

static volatile int sigpipes;
static const char *who = "?";
static double t0;

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

#define P(...) do { printf("[%8.1fms] %s: ", now_ms() - t0, who); printf(__VA_ARGS__); printf("\n"); fflush(stdout); } while (0)

static void on_sigpipe(int s) { (void)s; sigpipes++; }

static const char *ename(int e)
{
	switch (e) {
	case 0: return "0";
	case ECONNRESET: return "ECONNRESET";
	case ECONNREFUSED: return "ECONNREFUSED";
	case ECONNABORTED: return "ECONNABORTED";
	case ENOTCONN: return "ENOTCONN";
	case EPIPE: return "EPIPE";
	case EAGAIN: return "EAGAIN";
	case EHOSTUNREACH: return "EHOSTUNREACH";
	case ESHUTDOWN: return "ESHUTDOWN";
	case EINVAL: return "EINVAL";
	default: return "other";
	}
}

static void show_revents(int sd, const char *tag)
{
	struct pollfd p = { sd, POLLIN | POLLOUT | POLLRDHUP | POLLPRI, 0 };
	int r = poll(&p, 1, 0);
	P("poll(%s) rc=%d revents=0x%x%s%s%s%s%s%s", tag, r, p.revents,
	  p.revents & POLLIN ? " IN" : "", p.revents & POLLOUT ? " OUT" : "",
	  p.revents & POLLRDHUP ? " RDHUP" : "", p.revents & POLLHUP ? " HUP" : "",
	  p.revents & POLLERR ? " ERR" : "", p.revents & POLLRDNORM ? " RDNORM" : "");
}

static void sa_name(struct sockaddr_tipc *a, unsigned type, unsigned inst)
{
	memset(a, 0, sizeof(*a));
	a->family = AF_TIPC;
	a->addrtype = TIPC_ADDR_NAME;
	a->addr.name.name.type = type;
	a->addr.name.name.instance = inst;
	a->addr.name.domain = 0;
}

static int make_listener(int stype, unsigned type, unsigned inst)
{
	struct sockaddr_tipc a;
	int sd = socket(AF_TIPC, stype, 0);
	if (sd < 0) { perror("socket"); exit(1); }
	memset(&a, 0, sizeof(a));
	a.family = AF_TIPC;
	a.addrtype = TIPC_ADDR_NAMESEQ;
	a.scope = TIPC_CLUSTER_SCOPE;
	a.addr.nameseq.type = type;
	a.addr.nameseq.lower = inst;
	a.addr.nameseq.upper = inst;
	if (bind(sd, (struct sockaddr *)&a, sizeof(a)) < 0) { perror("bind"); exit(1); }
	if (listen(sd, 4) < 0) { perror("listen"); exit(1); }
	return sd;
}

static int do_accept(int ls)
{
	int sd = accept(ls, NULL, NULL);
	if (sd < 0) { perror("accept"); exit(1); }
	close(ls);
	return sd;
}

static int do_dial(int stype, unsigned type, unsigned inst)
{
	struct sockaddr_tipc a;
	int i, sd;
	for (i = 0; i < 100; i++) { /* listener may not be published yet */
		sd = socket(AF_TIPC, stype, 0);
		if (sd < 0) { perror("socket"); exit(1); }
		sa_name(&a, type, inst);
		if (connect(sd, (struct sockaddr *)&a, sizeof(a)) == 0)
			return sd;
		close(sd);
		usleep(50000);
	}
	perror("connect");
	exit(1);
}

static void do_recv(int sd, int i)
{
	char buf[256];
	ssize_t n;
	errno = 0;
	n = recv(sd, buf, sizeof(buf), 0);
	if (n > 0)
		P("recv#%d -> %zd bytes \"%.*s\"", i, n, (int)n, buf);
	else if (n == 0)
		P("recv#%d -> 0 (EOF)", i);
	else
		P("recv#%d -> -1 errno=%d %s (%s)%s", i, errno, ename(errno), strerror(errno),
		  errno == EAGAIN ? "  [= still blocked after SO_RCVTIMEO 3s]" : "");
}

static void do_send(int sd, int i)
{
	ssize_t n;
	int before = sigpipes;
	errno = 0;
	n = send(sd, "ping", 4, 0);
	P("send#%d(flags=0) -> %zd errno=%d %s (%s) SIGPIPE=%s", i, n, n < 0 ? errno : 0,
	  n < 0 ? ename(errno) : "-", n < 0 ? strerror(errno) : "-", sigpipes > before ? "yes" : "no");
}

static void survivor(int sd, const char *timing)
{
	struct timeval tv = { 3, 0 };
	int i, err = 0;
	socklen_t l = sizeof(err);

	setsockopt(sd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	P("connected, timing=%s", timing);
	if (strcmp(timing, "early")) {
		sleep(1);
		show_revents(sd, "before-first-call");
	}
	if (!strcmp(timing, "sendfirst")) {
		do_send(sd, 1);
		do_send(sd, 2);
	}
	for (i = 1; i <= 4; i++)
		do_recv(sd, i);
	show_revents(sd, "after-recvs");
	do_send(sd, 3);
	do_send(sd, 4);
	do_recv(sd, 5);
	show_revents(sd, "end");
	getsockopt(sd, SOL_SOCKET, SO_ERROR, &err, &l);
	P("SO_ERROR=%d %s", err, ename(err));
	close(sd);
}

static void peer_act(int sd, const char *action)
{
	P("connected, action=%s (in 300ms)", action);
	usleep(300000);
	if (!strcmp(action, "close")) {
		P("close()");
		close(sd);
	} else if (!strcmp(action, "shutclose")) {
		P("shutdown(SHUT_RDWR) -> %d", shutdown(sd, SHUT_RDWR));
		P("close()");
		close(sd);
	} else if (!strcmp(action, "shutwrclose")) {
		P("shutdown(SHUT_WR) -> %d", shutdown(sd, SHUT_WR));
		P("close()");
		close(sd);
	} else if (!strcmp(action, "send10close")) {
		P("send(10 bytes) -> %zd", send(sd, "0123456789", 10, 0));
		P("close()");
		close(sd);
	} else if (!strcmp(action, "exit")) {
		P("_exit(0) without close");
		_exit(0);
	} else if (!strcmp(action, "hold") || !strcmp(action, "kill")) {
		P("holding (pid %d) until killed", (int)getpid());
		for (;;)
			pause();
	} else {
		P("unknown action");
		exit(2);
	}
	sleep(6); /* keep the process alive (process exit is not the event under test) */
}

static int stype_of(const char *s)
{
	if (!strcmp(s, "seq")) return SOCK_SEQPACKET;
	if (!strcmp(s, "stream")) return SOCK_STREAM;
	fprintf(stderr, "bad STYPE\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigpipe;
	sigaction(SIGPIPE, &sa, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	t0 = now_ms();

	if (argc >= 6 && !strcmp(argv[1], "local")) {
		int stype = stype_of(argv[2]);
		const char *action = argv[3], *srole = argv[4], *timing = argv[5];
		unsigned type = argc > 6 ? strtoul(argv[6], 0, 0) : 18888;
		unsigned inst = argc > 7 ? strtoul(argv[7], 0, 0) : 17;
		int ls = make_listener(stype, type, inst);
		int sync[2];
		pid_t ps, pp;
		char c;

		printf("=== local stype=%s action=%s survivor=%s timing=%s {%u,%u}\n",
		       argv[2], action, srole, timing, type, inst);
		if (pipe(sync) < 0) { perror("pipe"); exit(1); }
		ps = fork();
		if (ps == 0) {
			int sd;
			who = "survivor";
			close(sync[0]);
			if (!strcmp(srole, "listen"))
				sd = do_accept(ls);
			else {
				close(ls);
				sd = do_dial(stype, type, inst);
			}
			survivor(sd, timing);
			_exit(0);
		}
		pp = fork();
		if (pp == 0) {
			int sd;
			who = "peer";
			if (!strcmp(srole, "listen")) {
				close(ls);
				sd = do_dial(stype, type, inst);
			} else
				sd = do_accept(ls);
			c = 'x';
			if (write(sync[1], &c, 1) != 1) _exit(1);
			peer_act(sd, action);
			_exit(0);
		}
		close(ls);
		close(sync[1]);
		who = "main";
		if (read(sync[0], &c, 1) == 1 && !strcmp(action, "kill")) {
			usleep(600000);
			P("kill(peer pid %d, SIGKILL)", (int)pp);
			kill(pp, SIGKILL);
		}
		waitpid(ps, NULL, 0);
		kill(pp, SIGKILL);
		waitpid(pp, NULL, 0);
		P("done");
		return 0;
	}
	if (argc >= 7 && !strcmp(argv[1], "surv")) {
		int stype = stype_of(argv[2]), sd;
		unsigned type = strtoul(argv[5], 0, 0), inst = strtoul(argv[6], 0, 0);
		who = "survivor";
		if (!strcmp(argv[3], "listen"))
			sd = do_accept(make_listener(stype, type, inst));
		else
			sd = do_dial(stype, type, inst);
		survivor(sd, argv[4]);
		P("done");
		return 0;
	}
	if (argc >= 7 && !strcmp(argv[1], "peer")) {
		int stype = stype_of(argv[2]), sd;
		unsigned type = strtoul(argv[5], 0, 0), inst = strtoul(argv[6], 0, 0);
		who = "peer";
		if (!strcmp(argv[4], "listen"))
			sd = do_accept(make_listener(stype, type, inst));
		else
			sd = do_dial(stype, type, inst);
		peer_act(sd, argv[3]);
		P("done");
		return 0;
	}
	fprintf(stderr, "usage: see source\n");
	return 2;
}
