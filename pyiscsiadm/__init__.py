"""iscsiadm: the command-line tool over the node/discovery database and iscsid."""
