/*
 * groupcheck - one member of a TIPC communication group, on a real Linux kernel (inside a
 * kernel-TIPC VM of the harness), printing everything it sends and receives so a test can
 * compare members and check the kernel's ordering.
 *
 *   groupcheck member TYPE INST [options, run in the order given]
 *
 * Set-up options:
 *   --node-scope         join with TIPC_NODE_SCOPE (default: cluster scope)
 *   --loopback           TIPC_GROUP_LOOPBACK: receive our own broadcasts and multicasts
 *   --events             TIPC_GROUP_MEMBER_EVTS: receive join/leave events
 *   --nonblock           send with MSG_DONTWAIT; on EAGAIN wait for POLLOUT and retry
 *   --tag STR            payload prefix (default "m"); payloads are "TAG.KIND.I", I counting
 *                        every send of this member from 0, so a receiver can check order
 *   --size N             pad each payload with '.' to N bytes
 *   --timeout MS         limit of each wait below (default 30000); exit 3 when it expires
 * Actions, in the order given:
 *   --wait-join N        receive (printing) until N join events have been seen
 *   --bcast N            N broadcasts (send() without an address)
 *   --anycast INST N     N anycasts to {TYPE, INST}
 *   --mcast INST N       N multicasts to {TYPE, INST, INST}
 *   --unicast NODE:PORT N  N unicasts to that socket (NODE in hex or decimal)
 *   --unicast members N  N unicasts to every member seen joining so far, in join order
 *   --recv N             receive until N data messages have been received in all
 *   --wait-leave N       receive until N leave events have been seen
 *   --linger MS          receive whatever comes for MS milliseconds
 *   --leave              TIPC_GROUP_LEAVE (close() leaves too)
 * Output, one line each (stdout, line buffered):
 *   self node=0xNODE port=PORT type=TYPE inst=INST
 *   tx KIND I len=N rc=R [to=0xNODE:PORT|inst=INST] [errno=E] [eagain=K]
 *                        KIND: b, a (anycast to INST), m (multicast to INST) or u
 *   rx node=0xNODE port=PORT inst=INST len=N flags=F data="..."
 *   evt join|leave node=0xNODE port=PORT inst=INST len=0 flags=OOB[|EOR]
 *   done rx=N joins=J leaves=L
 * where INST is the member's instance from the second address of the source pair and F is
 * "-" or OOB, EOR joined by '|'.  Exit 0 when every action completed, 1 on bad usage or a
 * failed system call, 3 on a wait's timeout.
 *
 * Build: gcc -O2 -Wall -static -s -o groupcheck groupcheck.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/tipc.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef AF_TIPC
#define AF_TIPC 30
#endif
#ifndef SOL_TIPC
#define SOL_TIPC 271
#endif

#define MAX_MEMBERS 64
#define MAX_MSG 66000

struct source_pair {		/* what recvmsg writes for a group socket */
	struct sockaddr_tipc sock;
	struct sockaddr_tipc member;
};

static int sd = -1;
static unsigned gtype, ginst;
static int nonblock, timeout_ms = 30000, size;
static const char *tag = "m";
static long rx_data, joins, leaves;
static int sent;		/* the I of the next payload */
static struct { unsigned node, port; } members[MAX_MEMBERS];
static int nmembers;

static void die(const char *what)
{
	printf("error %s errno=%d (%s)\n", what, errno, strerror(errno));
	exit(1);
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static void print_data(const char *p, int n)
{
	int i, shown = n < 200 ? n : 200;
	putchar('"');
	for (i = 0; i < shown; i++) {
		unsigned char c = p[i];
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c >= 32 && c < 127)
			putchar(c);
		else
			printf("\\x%02x", c);
	}
	putchar('"');
	if (shown < n)
		printf("...");
}

static void remember(unsigned node, unsigned port)
{
	int i;
	for (i = 0; i < nmembers; i++)
		if (members[i].node == node && members[i].port == port)
			return;
	if (nmembers < MAX_MEMBERS) {
		members[nmembers].node = node;
		members[nmembers].port = port;
		nmembers++;
	}
}

/* one message or event, waiting at most ms (-1: no limit); 0 when nothing came in time */
static int receive_one(int ms)
{
	static char buf[MAX_MSG + 1];
	struct source_pair src;
	struct iovec iov = { buf, sizeof(buf) };
	struct msghdr m;
	struct pollfd p = { sd, POLLIN, 0 };
	char flags[32] = "";
	int n, r;

	r = poll(&p, 1, ms);
	if (r < 0)
		die("poll");
	if (r == 0)
		return 0;
	memset(&m, 0, sizeof(m));
	memset(&src, 0, sizeof(src));
	m.msg_name = &src;
	m.msg_namelen = sizeof(src);
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	n = recvmsg(sd, &m, MSG_DONTWAIT);
	if (n < 0) {
		if (errno == EAGAIN)
			return 1;	/* woken for nothing: the caller checks its deadline */
		die("recvmsg");
	}
	if (m.msg_flags & MSG_OOB)
		strcat(flags, "OOB");
	if (m.msg_flags & MSG_EOR)
		strcat(flags, *flags ? "|EOR" : "EOR");
	if (m.msg_flags & MSG_TRUNC)
		strcat(flags, *flags ? "|TRUNC" : "TRUNC");
	if (m.msg_flags & MSG_OOB) {
		int leave = !!(m.msg_flags & MSG_EOR);
		printf("evt %s node=0x%08x port=%u inst=%u len=%d flags=%s namelen=%u\n",
		       leave ? "leave" : "join", src.sock.addr.id.node, src.sock.addr.id.ref,
		       src.member.addr.name.name.instance, n, flags, (unsigned)m.msg_namelen);
		if (leave)
			leaves++;
		else {
			joins++;
			remember(src.sock.addr.id.node, src.sock.addr.id.ref);
		}
	} else {
		printf("rx node=0x%08x port=%u inst=%u len=%d flags=%s data=",
		       src.sock.addr.id.node, src.sock.addr.id.ref,
		       src.member.addr.name.name.instance, n, *flags ? flags : "-");
		print_data(buf, n);
		putchar('\n');
		rx_data++;
	}
	return 1;
}

/* receive until *counter reaches want (or, want < 0, for -want ms); exit 3 on timeout */
static void receive_until(long *counter, long want, const char *what)
{
	double end = now_ms() + timeout_ms;
	while (*counter < want) {
		int left = (int)(end - now_ms());
		if (left <= 0) {
			printf("timeout %s have=%ld want=%ld\n", what, *counter, want);
			exit(3);
		}
		receive_one(left);
	}
}

static void linger(int ms)
{
	double end = now_ms() + ms;
	int left;
	while ((left = (int)(end - now_ms())) > 0)
		receive_one(left);
}

static void send_one(const char *kind, const struct sockaddr_tipc *to)
{
	int i = sent++;
	static char buf[MAX_MSG];
	int len, rc, eagain = 0, err = 0;

	len = snprintf(buf, sizeof(buf), "%s.%s.%d", tag, kind, i);
	if (size > len && size <= MAX_MSG) {
		memset(buf + len, '.', size - len);
		len = size;
	}
	for (;;) {
		if (to)
			rc = sendto(sd, buf, len, nonblock ? MSG_DONTWAIT : 0,
				    (const struct sockaddr *)to, sizeof(*to));
		else
			rc = send(sd, buf, len, nonblock ? MSG_DONTWAIT : 0);
		if (rc >= 0 || errno != EAGAIN || !nonblock)
			break;
		eagain++;
		{
			struct pollfd p = { sd, POLLOUT, 0 };
			if (poll(&p, 1, timeout_ms) == 0) {
				printf("timeout send %s %d eagain=%d\n", kind, i, eagain);
				exit(3);
			}
		}
	}
	err = rc < 0 ? errno : 0;
	printf("tx %s %d len=%d rc=%d", kind, i, len, rc);
	if (to && to->addrtype == TIPC_ADDR_ID)
		printf(" to=0x%08x:%u", to->addr.id.node, to->addr.id.ref);
	else if (to && to->addrtype == TIPC_ADDR_NAME)
		printf(" inst=%u", to->addr.name.name.instance);
	else if (to)
		printf(" inst=%u", to->addr.nameseq.lower);
	if (err)
		printf(" errno=%d", err);
	if (eagain)
		printf(" eagain=%d", eagain);
	putchar('\n');
}

static struct sockaddr_tipc service(unsigned inst, int range)
{
	struct sockaddr_tipc a;
	memset(&a, 0, sizeof(a));
	a.family = AF_TIPC;
	if (range) {
		a.addrtype = TIPC_ADDR_NAMESEQ;
		a.addr.nameseq.type = gtype;
		a.addr.nameseq.lower = inst;
		a.addr.nameseq.upper = inst;
	} else {
		a.addrtype = TIPC_ADDR_NAME;
		a.addr.name.name.type = gtype;
		a.addr.name.name.instance = inst;
	}
	return a;
}

static struct sockaddr_tipc socket_addr(unsigned node, unsigned port)
{
	struct sockaddr_tipc a;
	memset(&a, 0, sizeof(a));
	a.family = AF_TIPC;
	a.addrtype = TIPC_ADDR_ID;
	a.addr.id.node = node;
	a.addr.id.ref = port;
	return a;
}

static void usage(void)
{
	fprintf(stderr, "usage: groupcheck member TYPE INST [options] (see the source)\n");
	exit(1);
}

static long number(const char *s)
{
	char *end;
	long v;
	if (!s)
		usage();
	v = strtol(s, &end, 0);
	if (*end)
		usage();
	return v;
}

int main(int argc, char **argv)
{
	struct tipc_group_req req;
	struct sockaddr_tipc self;
	socklen_t l = sizeof(self);
	int i, k, joined = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 4 || strcmp(argv[1], "member"))
		usage();
	gtype = number(argv[2]);
	ginst = number(argv[3]);
	memset(&req, 0, sizeof(req));
	req.type = gtype;
	req.instance = ginst;
	req.scope = TIPC_CLUSTER_SCOPE;
	sd = socket(AF_TIPC, SOCK_RDM, 0);
	if (sd < 0)
		die("socket");

	for (i = 4; i < argc; i++) {
		const char *o = argv[i];
		/* the set-up options come first: the first action joins */
		if (!strcmp(o, "--node-scope")) {
			req.scope = TIPC_NODE_SCOPE;
			continue;
		} else if (!strcmp(o, "--loopback")) {
			req.flags |= TIPC_GROUP_LOOPBACK;
			continue;
		} else if (!strcmp(o, "--events")) {
			req.flags |= TIPC_GROUP_MEMBER_EVTS;
			continue;
		} else if (!strcmp(o, "--nonblock")) {
			nonblock = 1;
			continue;
		} else if (!strcmp(o, "--tag")) {
			if (++i >= argc)
				usage();
			tag = argv[i];
			continue;
		} else if (!strcmp(o, "--size")) {
			size = number(i + 1 < argc ? argv[++i] : NULL);
			continue;
		} else if (!strcmp(o, "--timeout")) {
			timeout_ms = number(i + 1 < argc ? argv[++i] : NULL);
			continue;
		}
		if (!joined) {
			if (setsockopt(sd, SOL_TIPC, TIPC_GROUP_JOIN, &req, sizeof(req)) < 0)
				die("TIPC_GROUP_JOIN");
			if (getsockname(sd, (struct sockaddr *)&self, &l) < 0)
				die("getsockname");
			printf("self node=0x%08x port=%u type=%u inst=%u\n", self.addr.id.node,
			       self.addr.id.ref, gtype, ginst);
			joined = 1;
		}
		if (!strcmp(o, "--wait-join")) {
			receive_until(&joins, number(i + 1 < argc ? argv[++i] : NULL), "join");
		} else if (!strcmp(o, "--wait-leave")) {
			receive_until(&leaves, number(i + 1 < argc ? argv[++i] : NULL), "leave");
		} else if (!strcmp(o, "--recv")) {
			receive_until(&rx_data, number(i + 1 < argc ? argv[++i] : NULL), "recv");
		} else if (!strcmp(o, "--linger")) {
			linger(number(i + 1 < argc ? argv[++i] : NULL));
		} else if (!strcmp(o, "--leave")) {
			if (setsockopt(sd, SOL_TIPC, TIPC_GROUP_LEAVE, NULL, 0) < 0)
				die("TIPC_GROUP_LEAVE");
			printf("left\n");
		} else if (!strcmp(o, "--bcast")) {
			int n = number(i + 1 < argc ? argv[++i] : NULL);
			for (k = 0; k < n; k++)
				send_one("b", NULL);
		} else if (!strcmp(o, "--anycast") || !strcmp(o, "--mcast")) {
			int range = !strcmp(o, "--mcast");
			struct sockaddr_tipc to;
			int n;
			to = service(number(i + 1 < argc ? argv[++i] : NULL), range);
			n = number(i + 1 < argc ? argv[++i] : NULL);
			for (k = 0; k < n; k++)
				send_one(range ? "m" : "a", &to);
		} else if (!strcmp(o, "--unicast")) {
			const char *dest = i + 1 < argc ? argv[++i] : NULL;
			int n = number(i + 1 < argc ? argv[++i] : NULL), j;
			if (!dest)
				usage();
			if (!strcmp(dest, "members")) {
				for (k = 0; k < n; k++)
					for (j = 0; j < nmembers; j++) {
						struct sockaddr_tipc to =
							socket_addr(members[j].node, members[j].port);
						send_one("u", &to);
					}
			} else {
				char node[32];
				const char *colon = strchr(dest, ':');
				struct sockaddr_tipc to;
				if (!colon || colon - dest >= (int)sizeof(node))
					usage();
				memcpy(node, dest, colon - dest);
				node[colon - dest] = 0;
				to = socket_addr(number(node), number(colon + 1));
				for (k = 0; k < n; k++)
					send_one("u", &to);
			}
		} else {
			usage();
		}
	}
	if (!joined)
		usage();
	printf("done rx=%ld joins=%ld leaves=%ld\n", rx_data, joins, leaves);
	close(sd);
	return 0;
}
