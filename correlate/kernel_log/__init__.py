"""Kernel logs: `NVRM: Xid` lines parsed in every form the driver's messages reach a file (`parse`) and
kernel-log files stored (`files`)."""
