/*
 * sockcheck - ask a real Linux kernel what its TIPC sockets answer: readiness after each
 * operation, SOL_SOCKET option defaults and setsockopt results, and the errno of every
 * failing call tipcshm's conformance suite relies on.  Runs inside one kernel-TIPC VM of the
 * harness (driven by sockcheck.py); everything happens in one process on node-local TIPC.
 *
 * Output: one JSON object per line.  The first is {"id": "meta", ...}.  Every other line is
 * {"id": "GROUP:STEP", RESULT} where RESULT is one of
 *     "errno": "ENAME"             the call failed (errno's symbolic name)
 *     "ret": N                     the call returned N (a count, 0 for success)
 *     "ok": true                   the call returned a descriptor
 *     "revents": "IN OUT ..."      poll(IN|OUT|PRI|RDHUP, timeout 0): the flags set, in the
 *                                  fixed order IN OUT PRI HUP ERR RDHUP (RDNORM etc. omitted)
 *     "value": N or [a, b, ...]    getsockopt's value (ints; struct options as lists)
 *     "count": N, "eagain": bool   for the window scenarios
 *     "ret": N, "flags": "OOB EOR", "source": NAME
 *                                  a group socket's recvmsg: its msg_flags and which of the
 *                                  scenario's sockets sent the message (or event)
 * tests/test_conformance.py replays every GROUP with tipcshm and compares step by step, so
 * a step's name and its meaning must stay in step with that file.
 *
 * Build: gcc -O2 -Wall -static -s -o sockcheck sockcheck.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <linux/tipc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#ifndef AF_TIPC
#define AF_TIPC 30
#endif
#ifndef SO_PEEK_OFF
#define SO_PEEK_OFF 42
#endif
#ifndef SO_INCOMING_CPU
#define SO_INCOMING_CPU 49
#endif

#define SERVICE 18888u
#define UNBOUND_INST 999u

static const char *group = "?";
static char last_step[96] = "(start)";

/* a step that blocks (a scenario bug, or a kernel that waits where it should not) ends the
 * run naming where it stood, instead of running into the harness's exec timeout silently */
static void on_alarm(int sig)
{
	char line[256];
	int n = snprintf(line, sizeof(line),
			 "{\"id\": \"fatal\", \"group\": \"%s\", \"what\": \"blocked after step %s\"}\n",
			 group, last_step);
	(void)sig;
	if (write(1, line, n) < 0)
		_exit(2);
	_exit(1);
}

static const char *errname(int e)
{
	static char other[16];
	switch (e) {
#define E(x) case x: return #x;
	E(EPERM) E(ENOENT) E(EINTR) E(EBADF) E(EAGAIN) E(ENOMEM) E(EACCES) E(EFAULT)
	E(EBUSY) E(EEXIST) E(EINVAL) E(ENFILE) E(EMFILE) E(ENOSPC) E(EPIPE) E(ERANGE)
	E(ENOTSOCK) E(EDESTADDRREQ) E(EMSGSIZE) E(EPROTOTYPE) E(ENOPROTOOPT)
	E(EPROTONOSUPPORT) E(ESOCKTNOSUPPORT) E(EOPNOTSUPP) E(EPFNOSUPPORT) E(EAFNOSUPPORT)
	E(EADDRINUSE) E(EADDRNOTAVAIL) E(ENETDOWN) E(ENETUNREACH) E(ECONNABORTED)
	E(ECONNRESET) E(ENOBUFS) E(EISCONN) E(ENOTCONN) E(ESHUTDOWN) E(ETIMEDOUT)
	E(ECONNREFUSED) E(EHOSTDOWN) E(EHOSTUNREACH) E(EALREADY) E(EINPROGRESS) E(ENODEV)
	E(ENOTTY) E(EDOM) E(ENOTEMPTY) E(ELOOP) E(ENAMETOOLONG) E(ENOSYS) E(ENXIO)
#undef E
	}
	snprintf(other, sizeof(other), "E%d", e);
	return other;
}

static void emit(const char *step, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(const char *step, const char *fmt, ...)
{
	va_list ap;
	snprintf(last_step, sizeof(last_step), "%s", step);
	alarm(20);
	printf("{\"id\": \"%s:%s\", ", group, step);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("}\n");
	fflush(stdout);
}

/* a call's result: a count (or 0), or the errno */
static void rec_ret(const char *step, long r)
{
	if (r < 0)
		emit(step, "\"errno\": \"%s\"", errname(errno));
	else
		emit(step, "\"ret\": %ld", r);
}

/* a call that returns a descriptor on success */
static int rec_fd(const char *step, int r)
{
	if (r < 0)
		emit(step, "\"errno\": \"%s\"", errname(errno));
	else
		emit(step, "\"ok\": true");
	return r;
}

static void rec_poll(const char *step, int sd)
{
	struct pollfd p = { sd, POLLIN | POLLOUT | POLLPRI | POLLRDHUP, 0 };
	char buf[64] = "";
	if (poll(&p, 1, 0) < 0) {
		emit(step, "\"errno\": \"%s\"", errname(errno));
		return;
	}
#define F(bit, name) if (p.revents & bit) { if (*buf) strcat(buf, " "); strcat(buf, name); }
	F(POLLIN, "IN") F(POLLOUT, "OUT") F(POLLPRI, "PRI") F(POLLHUP, "HUP") F(POLLERR, "ERR")
	F(POLLRDHUP, "RDHUP")
#undef F
	emit(step, "\"revents\": \"%s\"", buf);
}

static void rec_int_opt(const char *step, int sd, int opt)
{
	int v = -12345;
	socklen_t l = sizeof(v);
	if (getsockopt(sd, SOL_SOCKET, opt, &v, &l) < 0)
		emit(step, "\"errno\": \"%s\"", errname(errno));
	else
		emit(step, "\"value\": %d", v);
}

static void rec_tv_opt(const char *step, int sd, int opt)
{
	struct timeval tv = { -1, -1 };
	socklen_t l = sizeof(tv);
	if (getsockopt(sd, SOL_SOCKET, opt, &tv, &l) < 0)
		emit(step, "\"errno\": \"%s\"", errname(errno));
	else
		emit(step, "\"value\": [%ld, %ld]", (long)tv.tv_sec, (long)tv.tv_usec);
}

static void rec_linger(const char *step, int sd)
{
	struct linger lg = { -1, -1 };
	socklen_t l = sizeof(lg);
	if (getsockopt(sd, SOL_SOCKET, SO_LINGER, &lg, &l) < 0)
		emit(step, "\"errno\": \"%s\"", errname(errno));
	else
		emit(step, "\"value\": [%d, %d]", lg.l_onoff, lg.l_linger);
}

static void rec_peercred(const char *step, int sd)
{
	struct ucred c = { -1, 0, 0 };
	socklen_t l = sizeof(c);
	if (getsockopt(sd, SOL_SOCKET, SO_PEERCRED, &c, &l) < 0)
		emit(step, "\"errno\": \"%s\"", errname(errno));
	else
		emit(step, "\"value\": [%d, %d, %d]", (int)c.pid, (int)c.uid, (int)c.gid);
}

static void fatal(const char *what)
{
	printf("{\"id\": \"fatal\", \"group\": \"%s\", \"what\": \"%s\", \"errno\": \"%s\"}\n",
	       group, what, errname(errno));
	exit(1);
}

static struct sockaddr_tipc name_addr(unsigned type, unsigned inst)
{
	struct sockaddr_tipc a;
	memset(&a, 0, sizeof(a));
	a.family = AF_TIPC;
	a.addrtype = TIPC_ADDR_NAME;
	a.addr.name.name.type = type;
	a.addr.name.name.instance = inst;
	return a;
}

static struct sockaddr_tipc range_addr(unsigned type, unsigned lower, unsigned upper, int scope)
{
	struct sockaddr_tipc a;
	memset(&a, 0, sizeof(a));
	a.family = AF_TIPC;
	a.addrtype = TIPC_ADDR_NAMESEQ;
	a.scope = scope;
	a.addr.nameseq.type = type;
	a.addr.nameseq.lower = lower;
	a.addr.nameseq.upper = upper;
	return a;
}

#define SA(a) ((struct sockaddr *)&(a)), sizeof(a)

static int sock(int type)
{
	int sd = socket(AF_TIPC, type, 0);
	if (sd < 0)
		fatal("socket");
	return sd;
}

static void must(int r, const char *what)
{
	if (r < 0)
		fatal(what);
}

static int bound(int type, unsigned inst)
{
	int sd = sock(type);
	struct sockaddr_tipc a = range_addr(SERVICE, inst, inst, TIPC_NODE_SCOPE);
	must(bind(sd, SA(a)), "bind");
	return sd;
}

static void set_rcvtimeo_ms(int sd, int opt, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	must(setsockopt(sd, SOL_SOCKET, opt, &tv, sizeof(tv)), "setsockopt timeval");
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* ------------------------------------------------------------ connectionless: RDM, DGRAM */
static void connectionless(int type, const char *gname, unsigned inst)
{
	char buf[2000], g[64];
	int srv, cli, v;
	struct sockaddr_tipc to = name_addr(SERVICE, inst), a;

	snprintf(g, sizeof(g), "cl.%s", gname);
	group = g;
	srv = sock(type);
	rec_poll("created", srv);
	a = range_addr(SERVICE, inst, inst, TIPC_NODE_SCOPE);
	rec_ret("bind", bind(srv, SA(a)));
	rec_poll("bound", srv);
	cli = sock(type);
	rec_ret("sendto", sendto(cli, "hello", 5, 0, SA(to)));
	rec_poll("queued1", srv);
	rec_poll("sender_after_send", cli);
	rec_ret("recv", recv(srv, buf, sizeof(buf), 0));
	rec_poll("after_recv1", srv);
	sendto(cli, "one", 3, 0, SA(to));
	sendto(cli, "two", 3, 0, SA(to));
	rec_ret("recv_first_of_two", recv(srv, buf, sizeof(buf), 0));
	rec_poll("queued2_recv1", srv);
	rec_ret("recv_second_of_two", recv(srv, buf, sizeof(buf), 0));
	rec_poll("drained", srv);
	rec_ret("recv_empty_dontwait", recv(srv, buf, sizeof(buf), MSG_DONTWAIT));
	rec_ret("recv_peek_trunc", recv(srv, buf, 2, MSG_DONTWAIT | MSG_PEEK));

	set_rcvtimeo_ms(srv, SO_RCVTIMEO, 200);
	{
		double t = now_ms();
		rec_ret("recv_rcvtimeo_expired", recv(srv, buf, sizeof(buf), 0));
		emit("recv_rcvtimeo_waited", "\"value\": \"%s\"",
		     now_ms() - t >= 150 ? "about SO_RCVTIMEO" : "much less");
	}

	a = name_addr(SERVICE, UNBOUND_INST);
	rec_ret("sendto_unbound", sendto(cli, "x", 1, 0, SA(a)));
	v = 1;
	must(setsockopt(cli, SOL_TIPC, TIPC_DEST_DROPPABLE, &v, sizeof(v)), "DEST_DROPPABLE");
	rec_ret("sendto_unbound_droppable", sendto(cli, "x", 1, 0, SA(a)));
	v = 0;
	must(setsockopt(cli, SOL_TIPC, TIPC_DEST_DROPPABLE, &v, sizeof(v)), "DEST_DROPPABLE");
	a = range_addr(SERVICE, UNBOUND_INST, UNBOUND_INST + 5, 0);
	rec_ret("mcast_unbound", sendto(cli, "x", 1, 0, SA(a)));
	rec_ret("send_no_destination", send(cli, "x", 1, 0));
	rec_ret("sendto_oob", sendto(cli, "x", 1, MSG_OOB, SA(to)));
	rec_ret("recv_oob", recv(srv, buf, sizeof(buf), MSG_OOB | MSG_DONTWAIT));
	rec_ret("listen", listen(srv, 5));
	rec_fd("accept", accept4(srv, NULL, NULL, SOCK_NONBLOCK));
	rec_ret("shutdown", shutdown(srv, SHUT_RDWR));
	{
		struct sockaddr_tipc peer;
		socklen_t l = sizeof(peer);
		rec_ret("getpeername_unconnected", getpeername(cli, (struct sockaddr *)&peer, &l));
	}
	rec_ret("connect_name", connect(cli, SA(to)));
	{
		struct sockaddr_tipc peer;
		socklen_t l = sizeof(peer);
		rec_ret("getpeername_after_connect", getpeername(cli, (struct sockaddr *)&peer, &l));
	}
	rec_ret("send_after_connect", send(cli, "dflt", 4, 0));
	rec_ret("recv_after_connect_send", recv(srv, buf, sizeof(buf), MSG_DONTWAIT));

	a = range_addr(SERVICE, 20, 10, TIPC_NODE_SCOPE);
	rec_ret("bind_lower_gt_upper", bind(srv, SA(a)));
	a = range_addr(1, 500, 500, TIPC_NODE_SCOPE);
	rec_ret("bind_reserved_type_as_root", bind(srv, SA(a)));
	a = range_addr(SERVICE, inst, inst, TIPC_NODE_SCOPE);
	rec_ret("bind_same_again", bind(srv, SA(a)));
	a = range_addr(SERVICE, inst + 1, inst + 1, -TIPC_NODE_SCOPE);
	rec_ret("unbind_not_bound", bind(srv, SA(a)));
	a = range_addr(SERVICE, 0, ~0u, TIPC_NODE_SCOPE);
	rec_ret("bind_all_instances", bind(srv, SA(a)));
	memset(&a, 0, sizeof(a));
	a.family = AF_TIPC;
	a.addrtype = TIPC_ADDR_ID;
	rec_ret("bind_socket_addr", bind(srv, SA(a)));
	a = range_addr(SERVICE, 1, 1, TIPC_NODE_SCOPE);
	a.addrtype = 9;
	rec_ret("bind_bad_addrtype", bind(srv, SA(a)));
	a = name_addr(SERVICE, inst);
	a.addrtype = 9;
	rec_ret("sendto_bad_addrtype", sendto(cli, "x", 1, 0, SA(a)));
	memset(buf, 'm', sizeof(buf));
	{
		static char big[66001];
		rec_ret("sendto_66000", sendto(cli, big, 66000, 0, SA(to)));
		rec_ret("sendto_66001", sendto(cli, big, 66001, 0, SA(to)));
	}
	close(cli);
	close(srv);
}

/* a bound socket that never reads: how many 1000-byte non-blocking sends until EAGAIN */
static void connectionless_window(int type, const char *gname, unsigned inst)
{
	char g[64], buf[1000];
	int srv = bound(type, inst), cli = sock(type), n, depth = -1;
	struct sockaddr_tipc to = name_addr(SERVICE, inst);
	socklen_t l = sizeof(depth);
	const int cap = 20000;

	snprintf(g, sizeof(g), "window.%s", gname);
	group = g;
	memset(buf, 'w', sizeof(buf));
	for (n = 0; n < cap; n++)
		if (sendto(cli, buf, sizeof(buf), MSG_DONTWAIT, SA(to)) < 0)
			break;
	emit("nonblocking_sends", "\"count\": %d, \"eagain\": %s, \"errno\": \"%s\"", n,
	     n < cap && errno == EAGAIN ? "true" : "false", n < cap ? errname(errno) : "0");
	getsockopt(srv, SOL_TIPC, TIPC_SOCK_RECVQ_DEPTH, &depth, &l);
	emit("receiver_queued", "\"value\": %d", depth);
	rec_poll("sender", cli);
	rec_poll("receiver", srv);
	close(cli);
	close(srv);
}

/* ------------------------------------------------------------ connections */
static int fcntl_nonblock(int sd)
{
	return fcntl(sd, F_SETFL, fcntl(sd, F_GETFL) | O_NONBLOCK);
}

static int fcntl_block(int sd)
{
	return fcntl(sd, F_SETFL, fcntl(sd, F_GETFL) & ~O_NONBLOCK);
}

static void pair(int type, unsigned inst, int *client, int *server)
{
	int ls = bound(type, inst);
	struct sockaddr_tipc a = name_addr(SERVICE, inst);
	must(listen(ls, 5), "listen");
	*client = sock(type);
	must(fcntl_nonblock(*client), "nonblock");
	if (connect(*client, SA(a)) < 0 && errno != EINPROGRESS)
		fatal("connect");
	*server = accept(ls, NULL, NULL);
	if (*server < 0)
		fatal("accept");
	close(ls);
	{	/* the accept's answer establishes the client: wait for it (it is immediate) */
		struct pollfd p = { *client, POLLOUT, 0 };
		poll(&p, 1, 1000);
	}
	must(fcntl_block(*client), "block");
}

static void connection_basics(int type, const char *gname, unsigned inst)
{
	char g[64], buf[2000];
	int ls, cli, srv, v;
	struct sockaddr_tipc a = name_addr(SERVICE, inst), r;

	snprintf(g, sizeof(g), "conn.%s", gname);
	group = g;
	ls = sock(type);
	rec_poll("listener_created", ls);
	r = range_addr(SERVICE, inst, inst, TIPC_NODE_SCOPE);
	rec_ret("bind", bind(ls, SA(r)));
	rec_poll("listener_bound", ls);
	rec_ret("listen", listen(ls, 5));
	rec_poll("listening", ls);
	rec_ret("listen_again", listen(ls, 5));
	must(fcntl_nonblock(ls), "nonblock");
	rec_fd("accept_nothing_pending_o_nonblock", accept(ls, NULL, NULL));
	must(fcntl_block(ls), "block");
	set_rcvtimeo_ms(ls, SO_RCVTIMEO, 200);
	{
		double t = now_ms();
		rec_fd("accept_rcvtimeo_expired", accept(ls, NULL, NULL));
		emit("accept_rcvtimeo_waited", "\"value\": \"%s\"",
		     now_ms() - t >= 150 ? "about SO_RCVTIMEO" : "much less");
	}
	set_rcvtimeo_ms(ls, SO_RCVTIMEO, 0);
	rec_ret("recv_on_listener", recv(ls, buf, sizeof(buf), MSG_DONTWAIT));
	rec_ret("send_on_listener", send(ls, "x", 1, 0));
	rec_ret("connect_on_listener", connect(ls, SA(a)));
	/* the unconnected probes get a socket of their own: the kernel's shutdown() on an
	 * unconnected socket fails yet marks it shut down, which would colour later steps */
	cli = sock(type);
	rec_poll("client_created", cli);
	rec_ret("send_unconnected", send(cli, "x", 1, 0));
	rec_ret("recv_unconnected", recv(cli, buf, sizeof(buf), MSG_DONTWAIT));
	rec_fd("accept_not_listening", accept4(cli, NULL, NULL, SOCK_NONBLOCK));
	{
		struct sockaddr_tipc peer;
		socklen_t l = sizeof(peer);
		rec_ret("getpeername_unconnected", getpeername(cli, (struct sockaddr *)&peer, &l));
	}
	rec_ret("shutdown_unconnected", shutdown(cli, SHUT_RDWR));
	rec_poll("after_shutdown_unconnected", cli);
	close(cli);
	cli = sock(type);
	must(fcntl_nonblock(cli), "nonblock");
	rec_ret("connect_nonblocking", connect(cli, SA(a)));
	rec_poll("client_connecting", cli);
	rec_int_opt("client_connecting_so_error", cli, SO_ERROR);
	rec_ret("connect_again_while_connecting", connect(cli, SA(a)));
	rec_ret("send_while_connecting", send(cli, "x", 1, 0));
	rec_poll("listener_pending", ls);
	srv = rec_fd("accept", accept(ls, NULL, NULL));
	if (srv < 0)
		fatal("accept");
	rec_poll("listener_after_accept", ls);
	{
		struct pollfd p = { cli, POLLOUT, 0 };
		poll(&p, 1, 1000);
	}
	rec_poll("client_established", cli);
	rec_poll("server_established", srv);
	rec_int_opt("client_so_error", cli, SO_ERROR);
	rec_ret("connect_when_connected", connect(cli, SA(a)));
	must(fcntl_block(cli), "block");
	rec_ret("listen_when_connected", listen(cli, 5));
	rec_fd("accept_when_connected", accept4(cli, NULL, NULL, SOCK_NONBLOCK));
	rec_ret("send", send(cli, "hello", 5, 0));
	rec_poll("server_queued1", srv);
	rec_ret("recv", recv(srv, buf, sizeof(buf), 0));
	rec_poll("server_after_recv", srv);
	send(cli, "one", 3, 0);
	send(cli, "two", 3, 0);
	rec_ret("recv_first_of_two", recv(srv, buf, type == SOCK_STREAM ? 3 : sizeof(buf), 0));
	rec_poll("server_queued2_recv1", srv);
	rec_ret("recv_second_of_two", recv(srv, buf, sizeof(buf), 0));
	rec_poll("server_drained", srv);
	rec_ret("recv_empty_dontwait", recv(srv, buf, sizeof(buf), MSG_DONTWAIT));
	send(cli, "abcdef", 6, 0);
	rec_ret("recv_short_buffer", recv(srv, buf, 2, 0));
	rec_ret("recv_rest", recv(srv, buf, sizeof(buf), MSG_DONTWAIT));
	rec_ret("send_oob", send(cli, "x", 1, MSG_OOB));
	rec_ret("recv_oob", recv(srv, buf, sizeof(buf), MSG_OOB | MSG_DONTWAIT));
	rec_ret("sendto_other_address_when_connected", sendto(cli, "x", 1, 0, SA(a)));
	recv(srv, buf, sizeof(buf), MSG_DONTWAIT);
	set_rcvtimeo_ms(srv, SO_RCVTIMEO, 200);
	rec_ret("recv_rcvtimeo_expired", recv(srv, buf, sizeof(buf), 0));
	v = 1;
	rec_ret("set_conn_timeout", setsockopt(cli, SOL_TIPC, TIPC_CONN_TIMEOUT, &v, sizeof(v)));
	close(cli);
	close(srv);

	/* refused connections */
	cli = sock(type);
	r = name_addr(SERVICE, UNBOUND_INST);
	rec_ret("connect_unbound", connect(cli, SA(r)));
	rec_poll("after_connect_unbound", cli);
	rec_int_opt("so_error_after_connect_unbound", cli, SO_ERROR);
	close(cli);
	cli = sock(type);
	must(fcntl_nonblock(cli), "nonblock");
	rec_ret("connect_unbound_nonblocking", connect(cli, SA(r)));
	rec_poll("after_connect_unbound_nonblocking", cli);
	close(cli);
	{
		int rdm = bound(SOCK_RDM, inst + 1);
		r = name_addr(SERVICE, inst + 1);
		cli = sock(type);
		v = 1000;
		setsockopt(cli, SOL_TIPC, TIPC_CONN_TIMEOUT, &v, sizeof(v));
		rec_ret("connect_to_rdm_port", connect(cli, SA(r)));
		rec_poll("after_connect_to_rdm_port", cli);
		rec_int_opt("so_error_after_connect_to_rdm_port", cli, SO_ERROR);
		close(cli);
		cli = sock(type);
		must(fcntl_nonblock(cli), "nonblock");
		rec_ret("connect_to_rdm_port_nonblocking", connect(cli, SA(r)));
		{
			struct pollfd p = { cli, POLLIN | POLLOUT, 0 };
			poll(&p, 1, 1000);
		}
		rec_poll("after_connect_to_rdm_port_nonblocking", cli);
		rec_int_opt("so_error_after_connect_to_rdm_port_nonblocking", cli, SO_ERROR);
		rec_int_opt("so_error_read_twice", cli, SO_ERROR);
		close(cli);
		close(rdm);
	}
	/* a listener that never accepts: TIPC_CONN_TIMEOUT bounds connect(); SO_SNDTIMEO? */
	cli = sock(type);
	v = 300;
	setsockopt(cli, SOL_TIPC, TIPC_CONN_TIMEOUT, &v, sizeof(v));
	set_rcvtimeo_ms(cli, SO_SNDTIMEO, 100);
	{
		double t = now_ms();
		rec_ret("connect_never_accepted", connect(cli, SA(a)));
		emit("connect_never_accepted_waited", "\"value\": \"%s\"",
		     now_ms() - t >= 250 ? "TIPC_CONN_TIMEOUT" : "SO_SNDTIMEO or less");
	}
	rec_poll("after_connect_never_accepted", cli);
	close(cli);
	close(ls);
}

/* what the other end sees after one end shuts down or closes */
static void connection_ending(int type, const char *gname, const char *ending, unsigned inst)
{
	char g[64], buf[64];
	int cli, srv;

	snprintf(g, sizeof(g), "end.%s.%s", gname, ending);
	group = g;
	pair(type, inst, &cli, &srv);
	send(cli, "last", 4, 0);
	if (!strcmp(ending, "shut_wr"))
		rec_ret("shutdown", shutdown(cli, SHUT_WR));
	else if (!strcmp(ending, "shut_rd"))
		rec_ret("shutdown", shutdown(cli, SHUT_RD));
	else if (!strcmp(ending, "shut_rdwr"))
		rec_ret("shutdown", shutdown(cli, SHUT_RDWR));
	else
		rec_ret("close", close(cli));
	rec_poll("peer_data_queued", srv);
	rec_ret("peer_recv_data", recv(srv, buf, sizeof(buf), MSG_DONTWAIT));
	rec_poll("peer_after_data", srv);
	rec_ret("peer_recv1", recv(srv, buf, sizeof(buf), MSG_DONTWAIT));
	rec_poll("peer_after_recv1", srv);
	rec_ret("peer_recv2", recv(srv, buf, sizeof(buf), MSG_DONTWAIT));
	rec_ret("peer_send", send(srv, "x", 1, 0));
	rec_poll("peer_after_send", srv);
	rec_int_opt("peer_so_error", srv, SO_ERROR);
	if (strcmp(ending, "close")) {
		rec_poll("self", cli);
		rec_ret("self_recv", recv(cli, buf, sizeof(buf), MSG_DONTWAIT));
		/* a blocking recv answers differently from a non-blocking one here */
		set_rcvtimeo_ms(cli, SO_RCVTIMEO, 200);
		rec_ret("self_recv_blocking", recv(cli, buf, sizeof(buf), 0));
		rec_ret("self_send", send(cli, "x", 1, 0));
		rec_ret("self_shutdown_again", shutdown(cli, SHUT_RDWR));
		rec_int_opt("self_so_error", cli, SO_ERROR);
		close(cli);
	}
	close(srv);
}

/* an established connection whose peer never reads */
static void connection_window(int type, const char *gname, unsigned inst)
{
	char g[64], buf[1000];
	int cli, srv, n;
	const int cap = 100000;

	snprintf(g, sizeof(g), "window.%s", gname);
	group = g;
	pair(type, inst, &cli, &srv);
	memset(buf, 'w', sizeof(buf));
	for (n = 0; n < cap; n++)
		if (send(cli, buf, sizeof(buf), MSG_DONTWAIT) < 0)
			break;
	emit("nonblocking_sends", "\"count\": %d, \"eagain\": %s, \"errno\": \"%s\"", n,
	     n < cap && errno == EAGAIN ? "true" : "false", n < cap ? errname(errno) : "0");
	rec_poll("sender_full", cli);
	rec_poll("receiver", srv);
	set_rcvtimeo_ms(cli, SO_SNDTIMEO, 200);
	rec_ret("send_sndtimeo_expired", send(cli, buf, sizeof(buf), 0));
	close(cli);
	close(srv);
}

/* ------------------------------------------------------------ SOL_SOCKET options */
struct intopt {
	const char *name;
	int opt;
};

static const struct intopt int_opts[] = {
	{ "SO_DEBUG", SO_DEBUG }, { "SO_REUSEADDR", SO_REUSEADDR }, { "SO_TYPE", SO_TYPE },
	{ "SO_ERROR", SO_ERROR }, { "SO_DONTROUTE", SO_DONTROUTE },
	{ "SO_BROADCAST", SO_BROADCAST }, { "SO_SNDBUF", SO_SNDBUF }, { "SO_RCVBUF", SO_RCVBUF },
	{ "SO_KEEPALIVE", SO_KEEPALIVE }, { "SO_OOBINLINE", SO_OOBINLINE },
	{ "SO_PRIORITY", SO_PRIORITY }, { "SO_REUSEPORT", SO_REUSEPORT },
	{ "SO_PASSCRED", SO_PASSCRED }, { "SO_RCVLOWAT", SO_RCVLOWAT },
	{ "SO_SNDLOWAT", SO_SNDLOWAT }, { "SO_TIMESTAMP", SO_TIMESTAMP },
	{ "SO_ACCEPTCONN", SO_ACCEPTCONN }, { "SO_MARK", SO_MARK },
	{ "SO_PROTOCOL", SO_PROTOCOL }, { "SO_DOMAIN", SO_DOMAIN },
	{ "SO_PEEK_OFF", SO_PEEK_OFF }, { "SO_INCOMING_CPU", SO_INCOMING_CPU },
	{ NULL, 0 },
};

/* setsockopt(opt, value) then getsockopt(opt): what it reads back as */
static const struct { const char *name; int opt; int value; } int_sets[] = {
	{ "SO_REUSEADDR", SO_REUSEADDR, 1 }, { "SO_KEEPALIVE", SO_KEEPALIVE, 1 },
	{ "SO_BROADCAST", SO_BROADCAST, 1 }, { "SO_PRIORITY", SO_PRIORITY, 3 },
	{ "SO_PASSCRED", SO_PASSCRED, 1 }, { "SO_RCVLOWAT", SO_RCVLOWAT, 10 },
	{ "SO_OOBINLINE", SO_OOBINLINE, 1 }, { "SO_DONTROUTE", SO_DONTROUTE, 1 },
	{ "SO_RCVBUF", SO_RCVBUF, 65536 }, { "SO_RCVBUF", SO_RCVBUF, 1000 },
	{ "SO_RCVBUF", SO_RCVBUF, 1 << 24 }, { "SO_SNDBUF", SO_SNDBUF, 65536 },
	{ "SO_SNDBUF", SO_SNDBUF, 1000 }, { "SO_TYPE", SO_TYPE, 1 },
	{ "SO_ERROR", SO_ERROR, 1 }, { "SO_PROTOCOL", SO_PROTOCOL, 1 },
	{ "SO_DOMAIN", SO_DOMAIN, 1 }, { "SO_ACCEPTCONN", SO_ACCEPTCONN, 1 },
	{ "SO_PEEK_OFF", SO_PEEK_OFF, 0 }, { "SO_REUSEPORT", SO_REUSEPORT, 1 },
	{ NULL, 0, 0 },
};

static void options(int sd, const char *what)
{
	char g[64], step[96];
	int i;

	snprintf(g, sizeof(g), "opt.%s", what);
	group = g;
	for (i = 0; int_opts[i].name; i++) {
		snprintf(step, sizeof(step), "get_%s", int_opts[i].name);
		rec_int_opt(step, sd, int_opts[i].opt);
	}
	rec_tv_opt("get_SO_RCVTIMEO", sd, SO_RCVTIMEO);
	rec_tv_opt("get_SO_SNDTIMEO", sd, SO_SNDTIMEO);
	rec_linger("get_SO_LINGER", sd);
	rec_peercred("get_SO_PEERCRED", sd);
	for (i = 0; int_sets[i].name; i++) {
		int v = int_sets[i].value;
		snprintf(step, sizeof(step), "set_%s_%d", int_sets[i].name, v);
		rec_ret(step, setsockopt(sd, SOL_SOCKET, int_sets[i].opt, &v, sizeof(v)));
		snprintf(step, sizeof(step), "set_%s_%d_reads", int_sets[i].name, v);
		rec_int_opt(step, sd, int_sets[i].opt);
	}
	{
		struct timeval tv = { 1, 500000 };
		rec_ret("set_SO_RCVTIMEO_1.5", setsockopt(sd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)));
		rec_tv_opt("set_SO_RCVTIMEO_1.5_reads", sd, SO_RCVTIMEO);
		rec_ret("set_SO_SNDTIMEO_1.5", setsockopt(sd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)));
		rec_tv_opt("set_SO_SNDTIMEO_1.5_reads", sd, SO_SNDTIMEO);
		rec_ret("set_SO_RCVTIMEO_short", setsockopt(sd, SOL_SOCKET, SO_RCVTIMEO, &tv, 4));
	}
	{
		struct linger lg = { 1, 5 };
		rec_ret("set_SO_LINGER_1_5", setsockopt(sd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)));
		rec_linger("set_SO_LINGER_1_5_reads", sd);
	}
	{
		int v = 1;
		rec_ret("set_SO_RCVBUF_short", setsockopt(sd, SOL_SOCKET, SO_RCVBUF, &v, 2));
		rec_ret("set_bad_level", setsockopt(sd, 12345, 1, &v, sizeof(v)));
		rec_int_opt("get_unknown_option", sd, 12345);
		rec_ret("set_unknown_option", setsockopt(sd, SOL_SOCKET, 12345, &v, sizeof(v)));
	}
}

static void all_options(void)
{
	static const struct { const char *name; int type; } types[] = {
		{ "rdm", SOCK_RDM }, { "dgram", SOCK_DGRAM }, { "seqpacket", SOCK_SEQPACKET },
		{ "stream", SOCK_STREAM }, { NULL, 0 },
	};
	int i, sd, cli, srv;
	for (i = 0; types[i].name; i++) {
		sd = sock(types[i].type);
		options(sd, types[i].name);
		close(sd);
	}
	sd = bound(SOCK_SEQPACKET, 300);
	must(listen(sd, 5), "listen");
	options(sd, "listener");
	close(sd);
	pair(SOCK_STREAM, 301, &cli, &srv);
	options(srv, "stream_accepted");
	close(cli);
	close(srv);
}

/* ------------------------------------------------------------ communication groups */
#define GROUP_TYPE 18890u

static void join_req(struct tipc_group_req *g, unsigned type, unsigned inst, unsigned scope,
		     unsigned flags)
{
	memset(g, 0, sizeof(*g));
	g->type = type;
	g->instance = inst;
	g->scope = scope;
	g->flags = flags;
}

static void rec_join(const char *step, int sd, unsigned type, unsigned inst, unsigned scope,
		     unsigned flags)
{
	struct tipc_group_req g;
	join_req(&g, type, inst, scope, flags);
	rec_ret(step, setsockopt(sd, SOL_TIPC, TIPC_GROUP_JOIN, &g, sizeof(g)));
}

static void rec_group_opt(const char *step, int sd)
{
	int v = -12345;
	socklen_t l = sizeof(v);
	if (getsockopt(sd, SOL_TIPC, TIPC_GROUP_JOIN, &v, &l) < 0)
		emit(step, "\"errno\": \"%s\"", errname(errno));
	else
		emit(step, "\"value\": %d", v);
}

static struct sockaddr_tipc own_addr(int sd)
{
	struct sockaddr_tipc a;
	socklen_t l = sizeof(a);
	memset(&a, 0, sizeof(a));
	must(getsockname(sd, (struct sockaddr *)&a, &l), "getsockname");
	return a;
}

static struct sockaddr_tipc id_addr(int sd)
{
	struct sockaddr_tipc a = own_addr(sd);
	a.addrtype = TIPC_ADDR_ID;
	a.scope = 0;
	return a;
}

/* recvmsg (waiting up to the socket's SO_RCVTIMEO): the count, the flags (OOB, EOR, TRUNC)
 * and which socket sent it: "self", one of the named sockets, or "other" */
static void rec_group_recv(const char *step, int sd, const struct sockaddr_tipc *who,
			   const char *const *names)
{
	char buf[2000], flags[32] = "";
	struct sockaddr_tipc src[2];
	struct iovec iov = { buf, sizeof(buf) };
	struct msghdr m;
	const char *source = "other";
	int n, i;

	memset(&m, 0, sizeof(m));
	memset(src, 0, sizeof(src));
	m.msg_name = src;
	m.msg_namelen = sizeof(src);
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	n = recvmsg(sd, &m, 0);
	if (n < 0) {
		emit(step, "\"errno\": \"%s\"", errname(errno));
		return;
	}
	if (m.msg_flags & MSG_OOB)
		strcat(flags, "OOB");
	if (m.msg_flags & MSG_EOR)
		strcat(flags, *flags ? " EOR" : "EOR");
	if (m.msg_flags & MSG_TRUNC)
		strcat(flags, *flags ? " TRUNC" : "TRUNC");
	for (i = -1; i < 0 || names[i]; i++) {
		struct sockaddr_tipc a = i < 0 ? own_addr(sd) : who[i];
		if (a.addr.id.ref == src[0].addr.id.ref && a.addr.id.node == src[0].addr.id.node) {
			source = i < 0 ? "self" : names[i];
			break;
		}
	}
	emit(step, "\"ret\": %d, \"flags\": \"%s\", \"source\": \"%s\"", n, flags, source);
}

static void groups_rdm(void)
{
	static const char *const names[] = { "first", "second", "third", NULL };
	struct sockaddr_tipc a;
	char buf[64];
	int s0, s1, s2, s3, plain, v = 0;
	struct sockaddr_tipc who[3];	/* the scenario's sockets, as they name a sender */

	group = "grp.rdm";
	s1 = sock(SOCK_RDM);
	rec_group_opt("get_group_join_unjoined", s1);
	rec_ret("leave_unjoined", setsockopt(s1, SOL_TIPC, TIPC_GROUP_LEAVE, NULL, 0));
	rec_ret("leave_unjoined_int", setsockopt(s1, SOL_TIPC, TIPC_GROUP_LEAVE, &v, sizeof(v)));
	rec_join("join_type_63", s1, 63, 1, TIPC_CLUSTER_SCOPE, 0);
	rec_join("join_scope_4", s1, GROUP_TYPE, 1, 4, 0);
	{
		struct tipc_group_req g;
		join_req(&g, GROUP_TYPE, 1, TIPC_CLUSTER_SCOPE, 0);
		rec_ret("join_short", setsockopt(s1, SOL_TIPC, TIPC_GROUP_JOIN, &g, 8));
	}
	rec_group_opt("get_group_join_after_refusals", s1);
	/* scope 0 (not node scope): a socket and a group type of its own, closed at once */
	s0 = sock(SOCK_RDM);
	rec_join("join_scope_0", s0, GROUP_TYPE + 1, 1, 0, 0);
	rec_group_opt("get_group_join_scope_0", s0);
	rec_ret("bcast_alone_no_loopback", send(s0, "alone", 5, 0));
	close(s0);

	rec_join("join", s1, GROUP_TYPE, 1, TIPC_CLUSTER_SCOPE,
		 TIPC_GROUP_LOOPBACK | TIPC_GROUP_MEMBER_EVTS);
	rec_group_opt("get_group_join_joined", s1);
	rec_join("join_again", s1, GROUP_TYPE, 5, TIPC_CLUSTER_SCOPE, 0);
	set_rcvtimeo_ms(s1, SO_RCVTIMEO, 2000);
	who[0] = own_addr(s1);
	who[1] = who[2] = who[0];
	rec_group_recv("recv_own_join_event", s1, who, names);
	rec_poll("joined_drained", s1);
	a = range_addr(SERVICE, 500, 500, TIPC_NODE_SCOPE);
	rec_ret("bind_joined", bind(s1, SA(a)));
	a = name_addr(SERVICE, 500);
	rec_ret("connect_joined", connect(s1, SA(a)));
	rec_ret("listen_joined", listen(s1, 5));
	rec_ret("bcast_alone", send(s1, "alone", 5, 0));
	a = name_addr(GROUP_TYPE, 1);
	rec_ret("anycast_own_instance_alone", sendto(s1, "x", 1, 0, SA(a)));
	a = range_addr(GROUP_TYPE, 1, 1, 0);
	rec_ret("mcast_own_instance_alone", sendto(s1, "x", 1, 0, SA(a)));
	a = id_addr(s1);
	rec_ret("unicast_self", sendto(s1, "x", 1, 0, SA(a)));
	rec_poll("alone_after_sends", s1);
	rec_group_recv("alone_recv_1", s1, who, names);
	rec_group_recv("alone_recv_2", s1, who, names);
	rec_group_recv("alone_recv_3", s1, who, names);
	rec_group_recv("alone_recv_4", s1, who, names);
	rec_ret("alone_recv_dontwait", recv(s1, buf, sizeof(buf), MSG_DONTWAIT));

	s2 = sock(SOCK_RDM);
	set_rcvtimeo_ms(s2, SO_RCVTIMEO, 2000);
	who[1] = own_addr(s2);
	rec_join("second_join", s2, GROUP_TYPE, 2, TIPC_CLUSTER_SCOPE, 0);
	rec_group_recv("recv_second_join_event", s1, who, names);
	rec_ret("bcast", send(s1, "hello", 5, 0));
	rec_group_recv("second_recv_bcast", s2, who, names);
	rec_group_recv("recv_own_bcast", s1, who, names);
	a = name_addr(GROUP_TYPE, 2);
	rec_ret("anycast", sendto(s1, "any", 3, 0, SA(a)));
	rec_group_recv("second_recv_anycast", s2, who, names);
	a = range_addr(GROUP_TYPE, 2, 2, 0);
	rec_ret("mcast", sendto(s1, "mc", 2, 0, SA(a)));
	rec_group_recv("second_recv_mcast", s2, who, names);
	a = id_addr(s1);
	rec_ret("unicast", sendto(s2, "uni", 3, 0, SA(a)));
	rec_group_recv("recv_unicast", s1, who, names);
	rec_ret("bcast_oob", send(s1, "oob", 3, MSG_OOB));
	rec_group_recv("second_recv_bcast_oob", s2, who, names);
	rec_group_recv("recv_own_bcast_oob", s1, who, names);
	a = range_addr(GROUP_TYPE, 9, 9, 0);
	rec_ret("mcast_nobody", sendto(s1, "x", 1, 0, SA(a)));
	a = name_addr(GROUP_TYPE, 9);
	rec_ret("anycast_nobody", sendto(s1, "x", 1, 0, SA(a)));
	plain = sock(SOCK_RDM);
	a = id_addr(plain);
	rec_ret("unicast_non_member", sendto(s1, "x", 1, 0, SA(a)));
	a = range_addr(GROUP_TYPE, 1, 2, 0);
	rec_ret("mcast_range", sendto(s1, "range", 5, 0, SA(a)));
	rec_group_recv("second_recv_mcast_range", s2, who, names);
	rec_group_recv("recv_own_mcast_range", s1, who, names);
	rec_poll("first_after_sends", s1);
	rec_poll("second_after_sends", s2);

	/* a member that closes: its leave reaches the others; the second has no events */
	s3 = sock(SOCK_RDM);
	who[2] = own_addr(s3);
	rec_join("third_join", s3, GROUP_TYPE, 3, TIPC_CLUSTER_SCOPE, 0);
	rec_group_recv("recv_third_join_event", s1, who, names);
	close(s3);
	rec_group_recv("recv_third_leave_event", s1, who, names);
	rec_poll("second_without_events", s2);

	rec_ret("second_leave_int", setsockopt(s2, SOL_TIPC, TIPC_GROUP_LEAVE, &v, sizeof(v)));
	rec_ret("second_leave", setsockopt(s2, SOL_TIPC, TIPC_GROUP_LEAVE, NULL, 0));
	rec_group_opt("get_group_join_left", s2);
	rec_group_recv("recv_second_leave_event", s1, who, names);
	rec_ret("second_leave_again", setsockopt(s2, SOL_TIPC, TIPC_GROUP_LEAVE, NULL, 0));
	a = range_addr(SERVICE, 501, 501, TIPC_NODE_SCOPE);
	rec_ret("second_bind_after_leave", bind(s2, SA(a)));
	rec_join("second_join_when_bound", s2, GROUP_TYPE, 2, TIPC_CLUSTER_SCOPE, 0);
	rec_ret("leave", setsockopt(s1, SOL_TIPC, TIPC_GROUP_LEAVE, NULL, 0));
	rec_ret("bcast_after_leave", send(s1, "x", 1, 0));
	close(plain);
	close(s2);
	close(s1);
}

/* joining with the other socket types, and what the socket calls then answer */
static void groups_other(int type, const char *gname)
{
	char g[64];
	struct sockaddr_tipc a = name_addr(SERVICE, 502);
	int sd;

	snprintf(g, sizeof(g), "grp.%s", gname);
	group = g;
	sd = sock(type);
	rec_join("join", sd, GROUP_TYPE + 2, 1, TIPC_CLUSTER_SCOPE, TIPC_GROUP_LOOPBACK);
	rec_group_opt("get_group_join", sd);
	rec_poll("joined", sd);
	rec_ret("send", send(sd, "x", 1, MSG_DONTWAIT));
	rec_ret("sendto_service", sendto(sd, "x", 1, MSG_DONTWAIT, SA(a)));
	rec_ret("connect", connect(sd, SA(a)));
	rec_ret("listen", listen(sd, 5));
	rec_ret("leave", setsockopt(sd, SOL_TIPC, TIPC_GROUP_LEAVE, NULL, 0));
	close(sd);
}

int main(int argc, char **argv)
{
	struct utsname u;
	int i;
	static const struct { const char *name; int type; } conn_types[] = {
		{ "seqpacket", SOCK_SEQPACKET }, { "stream", SOCK_STREAM }, { NULL, 0 },
	};
	static const char *endings[] = { "shut_wr", "shut_rd", "shut_rdwr", "close", NULL };

	(void)argc;
	(void)argv;
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, on_alarm);
	alarm(20);
	setvbuf(stdout, NULL, _IOLBF, 0);
	uname(&u);
	printf("{\"id\": \"meta\", \"tool\": \"sockcheck\", \"kernel\": \"%s\", "
	       "\"version\": \"%s\", \"euid\": %d}\n", u.release, u.version, (int)geteuid());

	connectionless(SOCK_RDM, "rdm", 10);
	connectionless(SOCK_DGRAM, "dgram", 20);
	connectionless_window(SOCK_RDM, "rdm", 30);
	connectionless_window(SOCK_DGRAM, "dgram", 40);
	for (i = 0; conn_types[i].name; i++) {
		int j;
		connection_basics(conn_types[i].type, conn_types[i].name, 100 + 10 * i);
		for (j = 0; endings[j]; j++)
			connection_ending(conn_types[i].type, conn_types[i].name, endings[j],
					  200 + 10 * i + j);
		connection_window(conn_types[i].type, conn_types[i].name, 250 + i);
	}
	all_options();
	groups_rdm();
	groups_other(SOCK_DGRAM, "dgram");
	groups_other(SOCK_SEQPACKET, "seqpacket");
	groups_other(SOCK_STREAM, "stream");
	group = "done";
	printf("{\"id\": \"end\"}\n");
	return 0;
}
