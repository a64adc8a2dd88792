"""The services' Dockerfiles, read as the builder would read them.

There is no Docker engine here, so nothing is built: each Dockerfile is parsed into stages and checked
for what makes a build fail or an image wrong — a COPY of a path that moved or that .dockerignore
leaves out, a stage that does not exist, an entry point naming a missing module, stubs not generated,
pins not applied, a root user, ports that disagree with the Helm chart.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROTOGEN = "services/common/src/sd_common/protogen.py"
BUILD_TOOLS = ("gcc", "g++", "build-essential", "clang", "make", "cmake", "nvcc", "cuda-toolkit")


def makefile_services() -> list[str]:
    """The services the Makefile builds and installs: the list every image must cover."""
    m = re.search(r"^SERVICES\s*:?=\s*(.+)$", (REPO / "Makefile").read_text(), re.M)
    assert m, "Makefile has no SERVICES list"
    return m.group(1).split()


SERVICES = makefile_services()


# --- a small Dockerfile reader ---------------------------------------------------------------------

@dataclass
class Instruction:
    keyword: str
    flags: dict[str, str]
    mounts: list[dict[str, str]]
    args: str
    line: int

    def words(self) -> list[str]:
        return shlex.split(self.args)


@dataclass
class Stage:
    index: int
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)
    raw_base: str = ""  # as written, before ARG substitution: ${PYTHON_IMAGE}

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, ref: str) -> Stage | None:
        for s in self.stages:
            if s.name == ref or str(s.index) == ref:
                return s
        return None


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Joins backslash continuations and drops comments and blank lines; keeps the first line number."""
    out: list[tuple[int, str]] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by the builder
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        out.append((start, buf + stripped))
        buf = ""
    assert not buf, "Dockerfile ends inside a continued line"
    return out


def split_flags(rest: str) -> tuple[dict[str, str], list[dict[str, str]], str]:
    """Leading --flags of an instruction; RUN's --mount may repeat and is parsed into its fields."""
    flags: dict[str, str] = {}
    mounts: list[dict[str, str]] = []
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        key, _, value = word[2:].partition("=")
        if key == "mount":
            mounts.append(dict(part.partition("=")[::2] for part in value.split(",")))
        else:
            flags[key] = value
        rest = rest.lstrip()
    return flags, mounts, rest


def substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value)


@cache
def parse(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, text in logical_lines(path.read_text()):
        keyword, _, rest = text.partition(" ")
        keyword = keyword.upper()
        flags, mount_specs, args = split_flags(rest.strip())
        if keyword == "FROM":
            words = args.split()
            base = substitute(words[0], global_args)
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(len(stages), base, name, raw_base=words[0]))
        elif not stages:
            assert keyword == "ARG", f"{path}:{line}: only ARG may come before the first FROM"
            key, _, default = args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, flags, mount_specs, args, line))
    assert stages, f"{path} has no FROM"
    return Dockerfile(path, global_args, stages)


def dockerfile(svc: str) -> Dockerfile:
    return parse(REPO / "services" / svc / "Dockerfile")


# --- .dockerignore, as Docker's pattern matcher reads it -------------------------------------------

def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif c == "*":
            out, i = out + "[^/]*", i + 1
        elif c == "?":
            out, i = out + "[^/]", i + 1
        elif c == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1].replace("[^", "[^/").replace("[!", "[^/"), end + 1
        else:
            out, i = out + re.escape(c), i + 1
    return re.compile(out)


@cache
def dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:].strip() if negate else line
        rules.append((negate, _pattern_regex(pattern.strip("/"))))
    return rules


def ignored(rel: str) -> bool:
    """Whether the build context leaves `rel` out: the last rule matching it or a parent folder wins."""
    parts = rel.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for negate, rx in dockerignore():
        if any(rx.fullmatch(p) for p in prefixes):
            verdict = not negate
    return verdict


def tracked_files(under: str) -> list[str]:
    """The source files under a path, as git sees them (generated and ignored files excluded)."""
    try:
        # Tracked files and new ones git does not ignore: what a build from this working tree would see.
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", under],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        # A check that cannot see the files would pass for any Dockerfile: fail, and say what it needs.
        pytest.fail(f"cannot list the tracked files a COPY must carry (git ls-files: {exc}); run the tests "
                    "from a git checkout with git installed")
    return out.split()


# --- the tests ------------------------------------------------------------------------------------

def test_every_service_has_exactly_one_dockerfile_and_common_has_none():
    on_disk = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "services").rglob("*")
                     if p.is_file() and "Dockerfile" in p.name and ".venv" not in p.parts)
    assert on_disk == sorted(f"services/{s}/Dockerfile" for s in SERVICES)
    with_project = sorted(p.parent.name for p in (REPO / "services").glob("*/pyproject.toml"))
    assert sorted([*SERVICES, "common"]) == with_project


@pytest.mark.parametrize("svc", SERVICES)
def test_copy_and_mount_sources_exist_in_the_context_or_are_stages(svc):
    df = dockerfile(svc)
    for stage in df.stages:
        earlier = {s.name for s in df.stages[: stage.index] if s.name}
        for inst in stage.all("COPY") + stage.all("ADD"):
            where = f"{df.path.name}:{inst.line}"
            if "from" in inst.flags:
                assert inst.flags["from"] in earlier, f"{where}: no earlier stage {inst.flags['from']}"
                continue
            *sources, _dest = inst.words()
            assert sources, f"{where}: COPY without a source"
            for src in sources:
                matches = list(REPO.glob(src.rstrip("/"))) if any(c in src for c in "*?[") else [REPO / src]
                assert matches and all(m.exists() for m in matches), f"{where}: no {src} in the repository"
                assert not ignored(src), f"{where}: {src} is excluded by .dockerignore"
        for inst in stage.all("RUN"):
            where = f"{df.path.name}:{inst.line}"
            for m in inst.mounts:
                if m.get("type") != "bind":
                    continue
                if "from" in m:
                    assert m["from"] in earlier, f"{where}: mount from unknown stage {m['from']}"
                else:
                    src = m.get("source", ".")
                    assert (REPO / src).exists(), f"{where}: no {src} in the repository"
                    assert src == "." or not ignored(src), f"{where}: {src} is excluded by .dockerignore"


@pytest.mark.parametrize("svc", SERVICES)
def test_the_sources_the_build_needs_are_not_left_out_of_the_context(svc):
    df = dockerfile(svc)
    copied = [src for s in df.stages for i in s.all("COPY") if "from" not in i.flags
              for src in i.words()[:-1]]
    needed = [f for src in copied for f in tracked_files(src)
              if f.endswith((".py", ".proto", ".toml", ".txt")) and "/tests/" not in f]
    assert needed, "the Dockerfile copies no tracked source at all"
    left_out = [f for f in needed if ignored(f)]
    assert not left_out, f".dockerignore leaves out files the image needs: {left_out}"
    assert f"services/{svc}/src/sd_{svc}/__init__.py" in needed


@pytest.mark.parametrize("svc", SERVICES)
def test_stubs_are_generated_in_a_build_stage(svc):
    df = dockerfile(svc)
    assert (REPO / PROTOGEN).is_file(), f"{PROTOGEN} moved: the Dockerfiles call it by path"
    generating = []
    for stage in df.stages[:-1]:
        for n, inst in enumerate(stage.instructions):
            if inst.keyword == "RUN" and PROTOGEN in inst.args:
                words = inst.words()
                proto_root = words[words.index("--protos") + 1]
                out = words[words.index("--out") + 1]
                assert out == "services/common/src", "stubs must land in sd-common's source tree"
                assert any(p.suffix == ".proto" for p in (REPO / proto_root).rglob("*")), proto_root
                copied_before = {src.rstrip("/") for i in stage.instructions[:n] if i.keyword == "COPY"
                                 for src in i.words()[:-1]}
                assert {proto_root, "services/common"} <= copied_before, copied_before
                # sd-common's wheel, which carries the stubs, is built after they are generated.
                assert any("pip wheel" in i.args and "./services/common" in i.args
                           for i in stage.instructions[n + 1:]), "no sd-common wheel after generating stubs"
                generating.append(stage)
    assert generating, f"{svc}: no build stage runs {PROTOGEN}"
    assert PROTOGEN not in " ".join(i.args for i in df.final.instructions)


@pytest.mark.parametrize("svc", SERVICES)
def test_every_pip_step_is_pinned_by_constraints_or_offline(svc):
    df = dockerfile(svc)
    for stage in df.stages:
        constraints_copied = False
        for inst in stage.instructions:
            if inst.keyword == "COPY" and "constraints.txt" in inst.words()[:-1]:
                constraints_copied = True
            if inst.keyword != "RUN":
                continue
            for cmd in re.split(r"&&|;|\|\|", inst.args):
                words = cmd.split()
                if "pip" not in words or not {"install", "wheel"} & set(words):
                    continue
                where = f"{df.path.name}:{inst.line}: {cmd.strip()}"
                if "--no-index" in words:
                    assert any(w.startswith("--find-links") for w in words), where
                    continue
                assert "-c" in words and words[words.index("-c") + 1] == "constraints.txt", where
                assert constraints_copied, f"{where}: constraints.txt is not copied into this stage"
    final_pips = [i for i in df.final.all("RUN") if "pip install" in i.args]
    assert final_pips and all("--no-index" in i.args for i in final_pips), \
        "the final stage must install only the wheels built before it"
    assert (REPO / "constraints.txt").is_file()


@pytest.mark.parametrize("svc", SERVICES)
def test_final_stage_runs_the_service_module_as_a_numeric_non_root_user(svc):
    df = dockerfile(svc)
    final = df.final
    users = final.all("USER")
    assert users, f"{svc}: the final stage sets no USER"
    m = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1].args)
    assert m, f"{svc}: USER {users[-1].args} is not numeric (runAsNonRoot needs a numeric uid)"
    uid = int(m.group(1))
    assert uid != 0
    creates = " ".join(i.args for i in final.all("RUN"))
    assert f"--uid {uid}" in creates, f"{svc}: uid {uid} is not created in the final stage"
    chart_values = yaml.safe_load((REPO / "charts/scale-diffusion/values.yaml").read_text())
    chart_uid = chart_values["global"]["podSecurityContext"]["runAsUser"]
    assert chart_uid == uid, f"the chart runs pods as {chart_uid}, the image creates {uid}"

    (entry,) = final.all("ENTRYPOINT")
    assert json.loads(entry.args) == ["python", "-m", f"sd_{svc}"], "exec form, running the service module"
    main = REPO / "services" / svc / "src" / f"sd_{svc}" / "__main__.py"
    assert main.is_file(), f"ENTRYPOINT runs sd_{svc}, but {main.relative_to(REPO)} does not exist"
    assert [i.args for i in final.all("STOPSIGNAL")] == ["SIGTERM"]


@pytest.mark.parametrize("svc", SERVICES)
def test_images_are_built_from_the_agreed_bases_without_build_tools(svc):
    df = dockerfile(svc)
    tag = lambda base: base.partition("@")[0]
    assert tag(df.stages[0].base) == "python:3.11-slim", "stubs and wheels are built on python:3.11-slim"
    if svc == "diffusion":
        assert re.fullmatch(r"pytorch/pytorch:[\w.-]+-cuda[\w.-]+-runtime", tag(df.final.base)), df.final.base
    else:
        assert tag(df.final.base) == "python:3.11-slim"
    assert df.final.name is None or df.final.name not in {s.name for s in df.stages[:-1]}
    assert "devel" not in df.final.base
    for inst in df.final.all("RUN"):
        if "apt-get install" in inst.args or "apt install" in inst.args:
            installed = set(inst.args.split())
            assert not installed & set(BUILD_TOOLS), f"build tools in the final stage: {inst.args}"
    for inst in df.final.all("COPY"):
        assert "from" in inst.flags, f"the final stage copies sources ({inst.args}), not built output"


@pytest.mark.parametrize("svc", SERVICES)
def test_ports_and_listen_settings_agree_with_the_chart(svc):
    values = yaml.safe_load((REPO / "charts/scale-diffusion/values.yaml").read_text())
    ports = values["global"]["containerPorts"]
    df = dockerfile(svc)
    exposed = {int(p.split("/")[0]) for i in df.final.all("EXPOSE") for p in i.args.split()}
    want = {ports["grpc"], ports["metrics"]}
    if svc == "gateway":
        want.add(values["gateway"]["httpContainerPort"])
    assert exposed == want
    env = " ".join(i.args for i in df.final.all("ENV"))
    prefix = f"SD_{svc.upper()}_"
    assert f"{prefix}GRPC_HOST=0.0.0.0" in env and f"{prefix}GRPC_PORT={ports['grpc']}" in env
    assert f"{prefix}METRICS_PORT={ports['metrics']}" in env


def test_flash_attn_is_an_opt_in_of_the_diffusion_image_only():
    for svc in SERVICES:
        text = (REPO / "services" / svc / "Dockerfile").read_text()
        assert ("flash-attn" in text) == (svc == "diffusion"), svc
    df = dockerfile("diffusion")
    assert df.global_args.get("FLASH_ATTN") == "0", "flash-attn must be off unless asked for"
    stage_defaults = [i.args for s in df.stages for i in s.all("ARG") if i.args.startswith("FLASH_ATTN=")]
    assert not stage_defaults, f"a stage overrides FLASH_ATTN's one default: {stage_defaults}"
    builds = [i for s in df.stages[:-1] for i in s.all("RUN") if "flash-attn" in i.args]
    assert builds and all('"$FLASH_ATTN" = 1' in i.args for i in builds)
    # The default build never reaches the stage that compiles it, nor pulls the devel image.
    default = reachable_stages(df, df.global_args)
    compiling = {s.name for s in df.stages if s in builds_stages(df, builds)}
    assert compiling and not compiling & {s.name for s in default}
    assert compiling <= {s.name for s in reachable_stages(df, {**df.global_args, "FLASH_ATTN": "1"})}


def builds_stages(df: Dockerfile, instructions: list[Instruction]) -> list[Stage]:
    return [s for s in df.stages if any(i in s.instructions for i in instructions)]


# --- base images pinned by digest ------------------------------------------------------------------

PINNED = re.compile(r"[a-z0-9][a-z0-9._/-]*:[\w.-]+@sha256:[0-9a-f]{64}")


def base_image_pins() -> dict[str, str]:
    """base-images.txt: build ARG name -> image reference (the one record of every base image)."""
    pins = {}
    for raw in (REPO / "base-images.txt").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, ref = line.partition("=")
            assert name not in pins, f"base-images.txt names {name} twice"
            pins[name] = ref
    return pins


def reachable_stages(df: Dockerfile, args: dict[str, str]) -> list[Stage]:
    """The stages a build of the final stage runs with these global ARG values (BuildKit skips others)."""
    def resolve(ref: str) -> Stage | None:
        return df.stage(substitute(ref, args))

    seen: list[Stage] = []
    todo = [df.final]
    while todo:
        stage = todo.pop()
        if stage in seen:
            continue
        seen.append(stage)
        refs = [stage.raw_base] + [i.flags["from"] for i in stage.instructions if "from" in i.flags] + \
               [m["from"] for i in stage.instructions for m in i.mounts if "from" in m]
        todo.extend(s for s in map(resolve, refs) if s is not None)
    return seen


def external_base(df: Dockerfile, stage: Stage, args: dict[str, str]) -> str | None:
    """The image a stage starts from, or None when it starts from an earlier stage."""
    base = substitute(stage.raw_base, args)
    return None if df.stage(base) is not None else base


@pytest.mark.parametrize("svc", SERVICES)
def test_every_base_image_a_build_pulls_is_pinned_by_digest_as_recorded(svc):
    df = dockerfile(svc)
    pins = base_image_pins()
    for name, default in df.global_args.items():
        if name.endswith("_IMAGE"):
            assert name in pins, f"{df.path.name}: ARG {name} is not recorded in base-images.txt"
            assert default == pins[name], f"{df.path.name}: ARG {name}={default}, base-images.txt says {pins[name]}"
    flavours = [df.global_args]
    if "FLASH_ATTN" in df.global_args:
        flavours.append({**df.global_args, "FLASH_ATTN": "1"})
    for args in flavours:
        for stage in reachable_stages(df, args):
            base = external_base(df, stage, args)
            if base is None:
                continue
            raw = stage.raw_base
            assert raw.startswith("${") and raw.endswith("}"), f"{df.path.name}: FROM {raw} is not a recorded ARG"
            if args is flavours[0]:
                assert PINNED.fullmatch(base), f"{df.path.name}: stage {stage.name or stage.index} pulls {base} by tag"


def test_the_base_image_record_pins_everything_but_the_flash_attn_compiler():
    pins = base_image_pins()
    unpinned = {name for name, ref in pins.items() if not PINNED.fullmatch(ref)}
    assert unpinned == {"TORCH_DEVEL_IMAGE"}, unpinned  # see base-images.txt: pulled only with FLASH_ATTN=1
    used = {name for svc in SERVICES for name in dockerfile(svc).global_args if name.endswith("_IMAGE")}
    assert used == set(pins), f"recorded but unused, or used but unrecorded: {used ^ set(pins)}"


def test_the_digest_check_rejects_a_tag_only_base(tmp_path):
    """The check in use does reject what it must: a Dockerfile whose FROM pulls a tag."""
    path = tmp_path / "Dockerfile"
    path.write_text("ARG PYTHON_IMAGE=python:3.11-slim\nFROM ${PYTHON_IMAGE}\nRUN true\n")
    df = parse(path)
    (stage,) = reachable_stages(df, df.global_args)
    assert not PINNED.fullmatch(external_base(df, stage, df.global_args))
    assert PINNED.fullmatch(base_image_pins()["PYTHON_IMAGE"])


def web_stage(df: Dockerfile) -> tuple[str, Instruction]:
    """The one Node stage's build script, and the final stage's COPY of the game it built."""
    web = [s for s in df.stages if s.base.startswith("node:20")]
    assert len(web) == 1 and web[0].name
    script = " ".join(i.args for i in web[0].all("RUN"))
    assert "npm run build" in script
    (copy,) = [i for i in df.final.all("COPY") if i.flags.get("from") == web[0].name]
    assert copy.words()[0] == "/web/dist"
    return script, copy


def test_gateway_image_carries_the_web_game_when_it_exists():
    script, _ = web_stage(dockerfile("gateway"))
    assert "web/package.json" in script


def test_evaluator_image_carries_the_built_game_and_a_chromium_its_settings_point_to():
    from sd_evaluator.city.browser import CHROMIUM_CANDIDATES
    from sd_evaluator.city.settings import CitySettings

    df = dockerfile("evaluator")
    script, copy = web_stage(df)
    assert "npm ci" in script
    web = next(s for s in df.stages if s.base.startswith("node:20"))
    assert any(i.words()[0] == "web/" for i in web.all("COPY")), "the stage builds the repository's web/"
    dest = copy.words()[1]
    installs = " ".join(i.args for i in df.final.all("RUN") if "apt-get install" in i.args)
    assert "chromium" in installs.split() and "--no-install-recommends" in installs
    env = dict(w.split("=", 1) for i in df.final.all("ENV") for w in i.words())
    prefix = CitySettings.model_config["env_prefix"]
    assert env[prefix + "WEB_DIST"] == dest
    assert env[prefix + "CHROMIUM"] in CHROMIUM_CANDIDATES  # where Debian's package puts the binary
    # the settings read those names
    assert set(CitySettings.model_fields) >= {"web_dist", "chromium"}


@pytest.mark.parametrize("path, left_out", [
    (".venv/bin/python", True),
    (".git/HEAD", True),
    ("web/node_modules/three/package.json", True),
    (".run/store/x", True),
    ("services/gateway/src/sd_gateway/__pycache__/x.cpython-311.pyc", True),
    ("services/common/src/scale_diffusion/common/v1/common_pb2.py", True),
    ("services/ingest/src/sd_ingest.egg-info/PKG-INFO", True),
    ("web/dist/index.html", True),
    ("constraints.txt", False),
    ("protos/scale_diffusion/common/v1/common.proto", False),
    ("services/common/src/sd_common/protogen.py", False),
    ("services/gateway/pyproject.toml", False),
    ("web/package.json", False),
    ("web/src/main.tsx", False),
])
def test_dockerignore_keeps_the_context_small_and_clean(path, left_out):
    assert ignored(path) is left_out
