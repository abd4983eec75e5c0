# pyroute2 ships no type information; pyiscsid uses pyroute2.netlink only (see netlink/).
