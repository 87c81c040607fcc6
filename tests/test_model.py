"""The static model: ids, tags, the @action decorator (design.md §1)."""

from __future__ import annotations

import pytest

from gostage import Action, ActionContext, BaseAction, Stage, Workflow, action


class Noop(BaseAction):
    def execute(self, ctx: ActionContext) -> None:
        pass


@pytest.mark.parametrize("bad", ["", None, 3])
def test_ids_and_names_must_be_non_empty_strings(bad: object) -> None:
    with pytest.raises(ValueError):
        Workflow(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Stage(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Noop(bad)  # type: ignore[arg-type]


def test_duplicate_stage_id_is_rejected_at_add_stage() -> None:
    wf = Workflow("wf").add_stage(Stage("a"))
    with pytest.raises(ValueError, match="'a'"):
        wf.add_stage(Stage("a"))
    assert [s.id for s in wf.stages] == ["a"]


def test_tags_are_ordered_and_never_duplicated() -> None:
    a = Noop("n", tags=["x", "y", "x"])
    a.add_tag("y")
    a.add_tag("z")
    assert a.tags == ("x", "y", "z")
    stage = Stage("s", tags=["t"])
    stage.add_tag("t")
    assert stage.tags == ("t",) and stage.has_tag("t") and not stage.has_tag("u")
    wf = Workflow("w")
    wf.add_tag("prod")
    assert wf.has_tag("prod")


def test_action_decorator_bare_and_with_arguments() -> None:
    @action
    def load_data(ctx: ActionContext) -> None:
        """Load the data.

        More text that is not part of the description.
        """

    @action(name="custom", description="explicit", tags=["io"])
    def other(ctx: ActionContext) -> None:
        pass

    assert isinstance(load_data, Action)
    assert load_data.name == "load_data"
    assert load_data.description == "Load the data."
    assert (other.name, other.description, other.tags) == ("custom", "explicit", ("io",))


def test_action_base_is_abstract() -> None:
    with pytest.raises(TypeError):
        Action()  # type: ignore[abstract]
    with pytest.raises(TypeError):
        BaseAction("x")  # type: ignore[abstract]


def test_lists_are_copies_and_adders_check_types() -> None:
    stage = Stage("s").add_action(Noop("a"))
    stage.actions.append(Noop("sneaky"))
    assert [a.name for a in stage.actions] == ["a"]
    with pytest.raises(TypeError):
        stage.add_action(lambda ctx: None)  # type: ignore[arg-type]
    wf = Workflow("w").add_stage(stage)
    wf.stages.clear()
    assert wf.get_stage("s") is stage
    with pytest.raises(KeyError, match="'zzz'"):
        wf.get_stage("zzz")


def test_workflow_toggles_before_a_run() -> None:
    wf = Workflow("w").add_stage(Stage("s").add_action(Noop("a")))
    wf.disable_stage("s")
    wf.disable_action("a")
    assert not wf.is_stage_enabled("s") and not wf.is_action_enabled("a")
    wf.enable_stage("s")
    wf.enable_action("a")
    assert wf.is_stage_enabled("s") and wf.is_action_enabled("a")
