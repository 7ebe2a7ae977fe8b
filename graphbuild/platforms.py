"""Target platforms read as BuildKit reads them: containerd's platforms.Parse, then Normalize.

`linux/arm64/v8`, `aarch64` and `LINUX/ARM64` are one platform to a builder, so they
must be one platform here too: TARGETARCH, the platform digest tracked, and the value
repos.yaml's `platforms:` passes to builders all use the normalised form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PLATFORM = "linux/amd64"

# containerd/platforms: platforms.go osRe and specifierRe, database.go isKnownOS, isKnownArch
_OS_RE = re.compile(r"([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.%-]*)((?:\+[A-Za-z0-9_.%-]+)*)\))?")
_SPECIFIER_RE = re.compile(r"[A-Za-z0-9_.-]+")
KNOWN_OS = frozenset(
    {
        "aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js",
        "linux", "nacl", "netbsd", "openbsd", "plan9", "solaris", "windows", "zos",
    }
)  # fmt: skip
KNOWN_ARCH = frozenset(
    {
        "386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le",
        "loong64", "mips", "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc",
        "riscv", "riscv64", "s390", "s390x", "sparc", "sparc64", "wasm",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Platform:
    """A target platform as BuildKit holds it: containerd's Parse, then Normalize."""

    os: str
    arch: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    def __str__(self) -> str:
        """containerd FormatAll: `os[(version[+features])]/arch[/variant]`."""
        head = self.os
        if self.os_version or self.os_features:
            version = "".join("%" + f"{ord(c):02X}" if c in "%+()/" else c for c in self.os_version)
            features = "+".join(self.os_features)
            head += f"({version}{'+' + features if features else ''})"
        return "/".join(p for p in (head, self.arch, self.variant) if p)


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """containerd/platforms database.go normalizeArch."""
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        if variant in ("8", "v8", "v8.0"):
            variant = ""
        elif variant in ("9", "9.0", "v9.0"):
            variant = "v9"
        return "arm64", variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm" and variant in ("", "7"):
        return "arm", "v7"
    if arch == "arm" and variant in ("5", "6", "8"):
        return "arm", "v" + variant
    return arch, variant


def parse(text: str) -> Platform:
    """`text` read as BuildKit reads a platform (containerd platforms.Parse, then Normalize):
    `aarch64` is arm64, `linux/arm` is arm/v7, `linux/arm64/v8` has no variant. Raises
    ValueError with containerd's reason. A lone OS gets graphbuild's build architecture
    (DEFAULT_PLATFORM's), as BuildKit gives it the builder's."""
    if "*" in text:
        raise ValueError(f"{text!r}: wildcards not yet supported")
    parts = text.split("/", 3)
    match = _OS_RE.fullmatch(parts[0])
    if match is None:
        raise ValueError(f"{parts[0]!r} is an invalid OS component of {text!r}")
    for part in parts[1:]:
        if not _SPECIFIER_RE.fullmatch(part):
            raise ValueError(f"{part!r} is an invalid component of {text!r}")
    os_name = match.group(1).lower()
    os_name = "darwin" if os_name == "macos" else os_name
    version = match.group(2) or ""
    if "%" in version:
        if re.search(r"%(?![0-9A-Fa-f]{2})", version):
            raise ValueError(f"{text!r} has an invalid OS version {version!r}")
        version = re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), version)
    features = tuple(sorted(set(match.group(3)[1:].split("+")))) if match.group(3) else ()
    if len(parts) == 1:
        if os_name in KNOWN_OS:
            arch, variant = DEFAULT_PLATFORM.split("/")[1], ""
        else:
            arch, variant = _normalize_arch(parts[0], "")
            if arch not in KNOWN_ARCH:
                raise ValueError(f"{text!r}: unknown operating system or architecture")
            os_name, version, features = DEFAULT_PLATFORM.split("/")[0], "", ()
    elif len(parts) == 2:
        arch, variant = _normalize_arch(parts[1], "")
    elif len(parts) == 3:
        arch, variant = _normalize_arch(parts[1], parts[2])
    else:
        raise ValueError(f"{text!r}: cannot parse platform specifier")
    arch, variant = _normalize_arch(arch, variant)  # Normalize after Parse
    return Platform(os_name, arch, variant, version, features)
