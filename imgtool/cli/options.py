"""The options of the commands a user starts most often (`run`, `images`, `pull`, `push`,
`copy`, `inspect`, `load`), declared once:
the click commands are built from these tables, and the lean parser of cli/fast.py reads the
same ones, so the two cannot disagree on a name, a kind or a default. No click here: the fast
path imports this module without it."""

from __future__ import annotations

FLAG, VALUE, MULTIPLE, INT = "flag", "value", "multiple", "int"
DIRECTORY = "directory"  # one value: an existing, readable directory (click.Path(exists=True))


class Opt:
    """One option: its spellings (`-e`, `--env`), the parameter it fills (`dest`), its kind
    (a flag, one value, a value given any number of times, an int, a directory), default,
    help and the name of its value in the help (`metavar`; None: click's for the kind)."""

    __slots__ = ("decls", "dest", "kind", "help", "default", "show_default", "metavar")

    def __init__(
        self,
        decls: tuple[str, ...],
        kind: str,
        help: str,
        default: object = None,
        dest: str = "",
        show_default: bool = False,
        metavar: str | None = None,
    ) -> None:
        self.decls = decls
        self.kind = kind
        self.help = help
        self.dest = dest or decls[-1].lstrip("-").replace("-", "_")
        self.show_default = show_default
        self.metavar = metavar
        if default is None:
            default = {FLAG: False, MULTIPLE: ()}.get(kind)
        self.default = default


RUN = (
    Opt(("--name",), VALUE, "A name for the container.", default=""),
    Opt(("--rm",), FLAG, "Remove the container when it exits."),
    Opt(("-d", "--detach"), FLAG, "Run in the background; print the id."),
    Opt(("-i", "--interactive"), FLAG, "Keep standard input open."),
    Opt(("-t", "--tty"), FLAG, "Give the container a terminal."),
    Opt(("-e", "--env"), MULTIPLE, "NAME=value (or NAME: the host's value)."),
    Opt(("-w", "--workdir"), VALUE, "Working directory in the container."),
    Opt(("-u", "--user"), VALUE, "name|uid[:group|gid], resolved in the image."),
    Opt(("-v", "--volume"), MULTIPLE, "/host/path:/container/path[:ro]."),
    Opt(("--hostname",), VALUE, "The container's host name."),
    Opt(("--network",), VALUE, "bridge, none or host.", default="bridge", show_default=True),
    Opt(("-p", "--publish"), MULTIPLE, "[ip:]hostport:containerport[/tcp|udp] (bridge network)."),
    Opt(("-P", "--publish-all"), FLAG, "Publish every EXPOSEd port."),
    Opt(("-m", "--memory"), VALUE, "Memory limit (e.g. 256m, 1g; 0: none)."),
    Opt(("--cpus",), VALUE, "CPU limit in CPUs (e.g. 1.5; 0: none)."),
    Opt(("--pids-limit",), INT, "Maximum number of processes (0 or -1: none)."),
    Opt(("--device",), MULTIPLE, "HOST[:CONTAINER][:rwm]: give the container a host device."),
    Opt(("--cap-add",), MULTIPLE, "Add a capability (or ALL)."),
    Opt(("--cap-drop",), MULTIPLE, "Drop a capability (or ALL)."),
    Opt(
        ("--privileged",),
        FLAG,
        "All capabilities and host devices, no seccomp filter, nothing masked.",
    ),
    Opt(("--entrypoint",), VALUE, "Override the image's entrypoint ('' clears it)."),
    Opt(("--init",), FLAG, "Run a minimal init as PID 1 (reaps zombies)."),
    Opt(("--read-only",), FLAG, "Mount the root filesystem read-only."),
    Opt(("--platform",), VALUE, "For an index: which platform's image."),
    Opt(
        ("--security-opt",),
        MULTIPLE,
        "seccomp=unconfined, seccomp=PROFILE.json (Docker's format), no-new-privileges.",
    ),
)

IMAGES = (
    Opt(("--json",), FLAG, "Print JSON (exact bytes, full digests).", dest="as_json"),
    Opt(("--digests",), FLAG, "Show full digests."),
)

INSECURE = Opt(("--insecure",), FLAG, "Allow plain HTTP and unverified TLS for this registry.")
CERT_DIR = Opt(
    ("--cert-dir",), DIRECTORY, "CA certificates (*.crt) and client keys instead of certs.d."
)

REGISTRY = (INSECURE, CERT_DIR)
PLATFORM = Opt(
    ("--platform",), VALUE, "os/arch[/variant] to pick from an index (default: this host)."
)

PULL = (
    PLATFORM,
    Opt(
        ("--all-platforms", "-a"),
        FLAG,
        "Keep the whole index, every platform.",
        dest="all_platforms",
    ),
    Opt(("--quiet", "-q"), FLAG, "Print only the image's name.", dest="quiet"),
    *REGISTRY,
)

PUSH = (Opt(("--quiet", "-q"), FLAG, "Print only the pushed digest.", dest="quiet"), *REGISTRY)

CREDENTIALS = "USER[:PASSWORD]"  # without the password, click asks for it
COPY = (
    Opt(("--all", "-a"), FLAG, "Copy a whole index, every platform.", dest="all_platforms"),
    PLATFORM,
    Opt(("--src-creds",), VALUE, "Credentials for the source registry.", metavar=CREDENTIALS),
    Opt(("--dest-creds",), VALUE, "Credentials for the destination.", metavar=CREDENTIALS),
    Opt(("--quiet", "-q"), FLAG, "Print only the digest written.", dest="quiet"),
    *REGISTRY,
)

INSPECT = (
    Opt(("--platform",), VALUE, "For an index: which platform's manifest and config."),
    Opt(("--raw",), FLAG, "Print the manifest exactly as stored."),
    Opt(("--config",), FLAG, "Print the config exactly as stored.", dest="config_only"),
)

LOAD = (
    Opt(
        ("--input", "-i"), VALUE, "The archive to read (default: stdin).", default="-", dest="path"
    ),
    Opt(("--quiet", "-q"), FLAG, "Print only the names (or ids) loaded.", dest="quiet"),
)
