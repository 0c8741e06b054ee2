"""The deployment origin as rpm-ostree keeps it (spec D): what the user asked for, in one typed model."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from strata.errors import InvalidInputError
from strata.image.keyfile import KeyFile


@dataclass(frozen=True)
class LocalPackage:
    """A local RPM recorded as `<sha256 of lead+signature+header>:<nevra>`."""

    sha256: str
    nevra: str

    def serialize(self) -> str:
        return f"{self.sha256}:{self.nevra}"

    @classmethod
    def parse(cls, text: str) -> LocalPackage:
        digest, sep, nevra = text.partition(":")
        if not sep or len(digest) != 64:
            raise InvalidInputError(f"malformed local package entry in origin: {text}")
        return cls(digest, nevra)


@dataclass(frozen=True)
class RemoteReplacement:
    """`override replace --experimental --from repo=NAME PKG...`: base packages replaced by the newest builds
    of the same names in rpm-md repository NAME, resolved again at every deployment (origin key
    `[overrides] replace=repo=NAME,PKG,...`)."""

    repo: str
    packages: tuple[str, ...]

    def serialize(self) -> str:
        return ",".join([f"repo={self.repo}", *self.packages])

    def evolve_without(self, name: str) -> RemoteReplacement:
        return RemoteReplacement(self.repo, tuple(p for p in self.packages if p != name))

    @classmethod
    def parse(cls, text: str) -> RemoteReplacement:
        source, *packages = text.split(",")
        kind, sep, name = source.partition("=")
        if kind != "repo" or not sep or not name or not packages or not all(packages):
            raise InvalidInputError(f"Invalid repo replacement in origin: {text}")
        return cls(name, tuple(packages))


@dataclass(frozen=True)
class Origin:
    refspec: str
    override_commit: str | None = None
    requested: tuple[str, ...] = ()
    requested_local: tuple[LocalPackage, ...] = ()
    requested_local_fileoverride: tuple[LocalPackage, ...] = ()
    override_remove: tuple[str, ...] = ()
    override_replace_local: tuple[LocalPackage, ...] = ()
    override_replace_remote: tuple[RemoteReplacement, ...] = ()
    regenerate_initramfs: bool = False
    initramfs_args: tuple[str, ...] = ()
    initramfs_etc: tuple[str, ...] = ()  # /etc files packed into an overlay initrd (`initramfs-etc --track`)
    unconfigured_state: str | None = None
    pinned: bool = False
    custom_url: str | None = None  # rebase --custom-origin-url: where the commit comes from, for people
    custom_description: str | None = None
    extra: dict[str, dict[str, str]] = field(default_factory=dict)  # groups/keys we keep but do not model

    @property
    def needs_local_assembly(self) -> bool:
        return bool(self.requested or self.requested_local or self.requested_local_fileoverride
                    or self.override_remove or self.override_replace_local or self.override_replace_remote
                    or self.regenerate_initramfs
                    or self.initramfs_args)

    @property
    def has_overrides(self) -> bool:
        return bool(self.override_remove or self.override_replace_local or self.override_replace_remote)

    def evolve(self, **changes: object) -> Origin:
        return replace(self, **changes)  # type: ignore[arg-type]

    # ------------------------------------------------------------ key file

    @classmethod
    def from_keyfile(cls, kf: KeyFile) -> Origin:
        refspec = kf.get("origin", "baserefspec") or kf.get("origin", "refspec")
        if not refspec:
            raise InvalidInputError("origin has neither refspec nor baserefspec")
        known = {("origin", "refspec"), ("origin", "baserefspec"), ("origin", "override-commit"),
                 ("origin", "unconfigured-state"), ("packages", "requested"), ("packages", "requested-local"),
                 ("packages", "requested-local-fileoverride"), ("overrides", "remove"),
                 ("overrides", "replace-local"), ("overrides", "replace"), ("rpmostree", "regenerate-initramfs"),
                 ("rpmostree", "initramfs-args"), ("rpmostree", "initramfs-etc"), ("libostree-transient", "pinned"),
                 ("origin", "custom-url"),
                 ("origin", "custom-description")}
        extra: dict[str, dict[str, str]] = {}
        for group, entries in kf.groups.items():
            for key, value in entries.items():
                if (group, key) not in known:
                    extra.setdefault(group, {})[key] = value
        return cls(
            refspec=refspec,
            override_commit=kf.get("origin", "override-commit"),
            requested=tuple(kf.get_list("packages", "requested")),
            requested_local=tuple(map(LocalPackage.parse, kf.get_list("packages", "requested-local"))),
            requested_local_fileoverride=tuple(
                map(LocalPackage.parse, kf.get_list("packages", "requested-local-fileoverride"))),
            override_remove=tuple(kf.get_list("overrides", "remove")),
            override_replace_local=tuple(map(LocalPackage.parse, kf.get_list("overrides", "replace-local"))),
            override_replace_remote=tuple(map(RemoteReplacement.parse, kf.get_list("overrides", "replace"))),
            regenerate_initramfs=kf.get_bool("rpmostree", "regenerate-initramfs", False),
            initramfs_args=tuple(kf.get_list("rpmostree", "initramfs-args")),
            initramfs_etc=tuple(kf.get_list("rpmostree", "initramfs-etc")),
            unconfigured_state=kf.get("origin", "unconfigured-state"),
            pinned=kf.get_bool("libostree-transient", "pinned", False),
            custom_url=kf.get("origin", "custom-url"),
            custom_description=kf.get("origin", "custom-description"),
            extra=extra,
        )

    @classmethod
    def parse(cls, text: str) -> Origin:
        return cls.from_keyfile(KeyFile.parse(text, "origin"))

    def to_keyfile(self) -> KeyFile:
        kf = KeyFile()
        kf.set("origin", "baserefspec" if self.needs_local_assembly else "refspec", self.refspec)
        if self.override_commit:
            kf.set("origin", "override-commit", self.override_commit)
        if self.unconfigured_state:
            kf.set("origin", "unconfigured-state", self.unconfigured_state)
        if self.custom_url:
            kf.set("origin", "custom-url", self.custom_url)
            if self.custom_description:
                kf.set("origin", "custom-description", self.custom_description)
        if self.regenerate_initramfs:
            kf.set("rpmostree", "regenerate-initramfs", True)
        if self.initramfs_args:
            kf.set("rpmostree", "initramfs-args", list(self.initramfs_args))
        if self.initramfs_etc:
            kf.set("rpmostree", "initramfs-etc", list(self.initramfs_etc))
        if self.requested:
            kf.set("packages", "requested", sorted(self.requested))
        if self.requested_local:
            kf.set("packages", "requested-local", [p.serialize() for p in self.requested_local])
        if self.requested_local_fileoverride:
            kf.set("packages", "requested-local-fileoverride",
                   [p.serialize() for p in self.requested_local_fileoverride])
        if self.override_remove:
            kf.set("overrides", "remove", sorted(self.override_remove))
        if self.override_replace_local:
            kf.set("overrides", "replace-local", [p.serialize() for p in self.override_replace_local])
        if self.override_replace_remote:
            kf.set("overrides", "replace", [r.serialize() for r in self.override_replace_remote])
        for group, entries in self.extra.items():
            for key, value in entries.items():
                kf.set(group, key, value)
        if self.pinned:
            kf.set("libostree-transient", "pinned", True)
        return kf

    def serialize(self) -> str:
        return self.to_keyfile().serialize()
