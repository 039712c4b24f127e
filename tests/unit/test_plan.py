"""The stage plan: what each stage reads, the stages a target needs, which are independent,
and the graphs refused before a step runs."""

from __future__ import annotations

import pytest

from imgtool.containerfile.parser import parse
from imgtool.containerfile.plan import Plan, make_plan
from imgtool.errors import BuildError, ContainerfileError

DIAMOND = """\
ARG BASE=scratch
FROM $BASE AS tools
FROM scratch AS left
COPY --from=tools /a /a
FROM scratch AS right
RUN --mount=type=bind,from=tools,target=/t true
FROM scratch AS unused
FROM left AS final
COPY --from=right /b /b
COPY --from=busybox:1 /bin/sh /sh
"""


def plan_of(text: str, target: str | None = None, **args: str) -> Plan:
    cf = parse(text, "Containerfile", lambda _: None)
    return make_plan(cf.instructions, "Containerfile", target, args, {"TARGETOS": "linux"})


def test_reads_needed_and_waves() -> None:
    plan = plan_of(DIAMOND)
    assert [st.reads for st in plan.stages] == [(), (0,), (0,), (), (1, 2)]
    assert plan.stages[4].base_stage == 1 and plan.stages[0].base == "scratch"
    assert plan.needed == (0, 1, 2, 4)  # "unused" is left out
    assert plan.waves() == [(0,), (1, 2), (4,)]  # left and right are independent
    assert plan.stage_named("TOOLS", 1) is plan.stages[0]
    assert plan.stage_named("0", 1) is plan.stages[0]
    assert plan.stage_named("busybox:1", 4) is None  # an image


def test_a_target_needs_only_what_it_reads() -> None:
    assert plan_of(DIAMOND, target="Right").needed == (0, 2)
    assert plan_of(DIAMOND, target="unused").needed == (3,)
    with pytest.raises(BuildError, match="target stage 'nope' not found"):
        plan_of(DIAMOND, target="nope")


def test_global_args_name_the_base_and_build_args_override() -> None:
    text = "ARG BASE=scratch\nFROM scratch AS one\nFROM ${BASE} AS two\n"
    assert plan_of(text).stages[1].base_stage is None
    plan = plan_of(text, BASE="one")
    assert plan.stages[1].base_stage == 0 and plan.stages[1].reads == (0,)
    assert ("BASE", "one") in plan.meta and ("TARGETOS", "linux") in plan.meta


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM scratch AS a\nCOPY --from=a /x /x\n", "reads 'a' (itself)"),
        ("FROM scratch\nCOPY --from=0 /x /x\n", "reads '0' (itself)"),
        (
            "FROM scratch AS a\nRUN --mount=from=b,target=/b true\nFROM scratch AS b\n",
            "reads 'b' (the later stage 'b')",
        ),
        ("FROM scratch AS a\nCOPY --from=1 /x /x\nFROM scratch\n", "(the later stage '1')"),
        ("FROM scratch AS a\nFROM scratch AS A\n", "duplicate stage name 'a'"),
        ("FROM scratch AS 1st\n", "invalid stage name '1st'"),
        ("RUN true\nFROM scratch\n", "RUN before the first FROM"),
        ("ARG A\n", "no FROM instruction"),
        ("ARG A=${B:?needed}\nFROM scratch\n", "needed"),
    ],
)
def test_refused_graphs(text: str, message: str) -> None:
    with pytest.raises(ContainerfileError) as e:
        plan_of(text)
    assert message in str(e.value) and "Containerfile:" in str(e.value)


def test_a_long_chain_is_planned_without_recursion() -> None:
    n = 3000
    text = "FROM scratch AS s0\n" + "".join(f"FROM s{i - 1} AS s{i}\n" for i in range(1, n))
    plan = plan_of(text)
    assert len(plan.needed) == n and len(plan.waves()) == n
