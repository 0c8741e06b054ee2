"""The system service: rpm-ostree's D-Bus API (org.projectatomic.rpmostree1) over strata's transaction engine."""
