"""rpm-ostree's bus name, object paths and interface names: what clients need without the service's code."""

BUS_NAME = "org.projectatomic.rpmostree1"
SYSROOT_PATH = "/org/projectatomic/rpmostree1/Sysroot"
OS_PATH_PREFIX = "/org/projectatomic/rpmostree1/"
SYSROOT_IFACE = "org.projectatomic.rpmostree1.Sysroot"
OS_IFACE = "org.projectatomic.rpmostree1.OS"
TX_IFACE = "org.projectatomic.rpmostree1.Transaction"
