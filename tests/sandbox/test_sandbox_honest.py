"""The apparatus is honest: degradations carry no answer signal, evaluation sets share no content with
training, and training seeds cannot be built as an evaluation set."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder

from g2u.sandbox.build import build_sandbox
from g2u.sandbox.recipe import RESERVED_SEEDS, TRAIN_SEED_OFFSET, majority_prior, training_content
from g2u.sandbox.samples import content_key, draw_disjoint, draw_sample

N_PROBE = 2100  # 300 per degradation kind


def _params_features(sample) -> list[str]:
    """Everything the degradation decided, as categorical features (block corners quantised to 4 px)."""
    p = sample.params
    blocks = sorted((x // 4, y // 4) for x, y in p.get("blocks", []))
    return [p["name"], str(p["severity"]), str(p.get("side")), str(p.get("cut")), str(p.get("half")),
            str(blocks[0] if blocks else None), str(blocks[1] if len(blocks) > 1 else None)]


def _probe(samples, features) -> dict[str, tuple[float, float]]:
    """Held-out accuracy of a classifier on ``features`` alone, and of the majority answer, per kind."""
    out = {}
    kinds = sorted({s.question.kind for s in samples})
    for kind in kinds:
        rows = [s for s in samples if s.question.kind == kind]
        x = OneHotEncoder(handle_unknown="ignore").fit_transform([features(s) for s in rows])
        y = np.array([s.question.answer for s in rows])
        half = len(rows) // 2
        clf = LogisticRegression(max_iter=500).fit(x[:half], y[:half])
        values, counts = np.unique(y[:half], return_counts=True)
        out[kind] = (clf.score(x[half:], y[half:]), float((y[half:] == values[counts.argmax()]).mean()))
    return out


@pytest.fixture(scope="module")
def probe_samples():
    return [draw_sample(11, i) for i in range(N_PROBE)]


def test_degradation_parameters_alone_stay_at_the_prior(probe_samples):
    """Where an occluder or crop lands, and how large it is, must not tell the answer (the old occluder had
    one of three exact widths for every "no" of an "exists" question; "larger" hid the larger object)."""
    for kind, (probe, prior) in _probe(probe_samples, _params_features).items():
        assert probe <= prior + 0.05, (kind, probe, prior)


def test_the_probe_finds_a_leak_when_there_is_one(probe_samples):
    """The same classifier, given the subject's size (what the old occluder's width was), beats the prior
    on "larger" and "exists": the test above can fail."""
    def leaky(s):
        sizes = [o.size for o in s.scene.objects if (o.position, o.center) in s.question.targets]
        first_is_large = s.question.options and s.question.options[0] in {
            o.name for o in s.scene.objects if o.size == "large"}
        return _params_features(s) + [str(sizes), str(first_is_large)]

    result = _probe(probe_samples, leaky)
    assert result["larger"][0] > result["larger"][1] + 0.2, result["larger"]


def test_evaluation_sets_share_no_content_with_training():
    train = training_content()
    samples = draw_disjoint(0, 300, exclude=train)
    keys = [content_key(s.scene, s.question) for s in samples]
    assert len(set(keys)) == len(keys) and not set(keys) & train
    # without the exclusion, a plain draw of seed 0 does repeat training content (the check is not vacuous)
    plain = [content_key(s.scene, s.question) for s in (draw_sample(0, i) for i in range(300))]
    assert sum(k in train for k in plain) > 30


def test_build_refuses_training_seeds(tmp_path):
    for seed in (TRAIN_SEED_OFFSET, RESERVED_SEEDS.start, RESERVED_SEEDS.stop - 1):
        with pytest.raises(ValueError, match=r"--seed: .* training seed"):
            build_sandbox(tmp_path / "sb", 5, seed=seed)
    assert not (tmp_path / "sb").exists()


def test_majority_prior_is_learned_on_training_draws():
    by_text, by_kind = majority_prior()
    assert by_kind["exists"] in ("yes", "no") and by_kind["count"] in "1234"
    assert by_text["How many shapes are there?"] == by_kind["count"]
    assert len(by_text) > 6


def test_the_excluded_streams_are_the_recipe_s():
    """Build excludes the draws the default recipe trains on: a recipe change that forgets the exclusion
    list would let evaluation content into training."""
    from g2u.sandbox.recipe import training_streams
    from g2u.sandbox.train import TrainConfig

    config = TrainConfig()
    streams = dict(training_streams(config.seed))
    assert streams[TRAIN_SEED_OFFSET + config.seed] == config.steps * config.batch_size
    assert streams[TRAIN_SEED_OFFSET + config.seed - 2] == config.vision_pretrain_steps * config.vision_batch_size


def test_shipped_checkpoint_logs_its_recipe_and_the_retrain_check_compares_it():
    from g2u.sandbox.shipped import SHIPPED, compare
    from g2u.sandbox.train import TrainConfig, read_training_facts

    logged = read_training_facts(SHIPPED)
    assert logged["config"] == TrainConfig().__dict__  # the shipped model is the default recipe's
    assert (SHIPPED / "train.log").read_text().count("step") > 20
    assert compare(logged, dict(logged)) == []
    off = dict(logged, accuracy_clean=logged["accuracy_clean"] - 0.1)
    assert any("accuracy_clean" in p for p in compare(logged, off))
