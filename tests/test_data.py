import torch

from armor.pipeline.data import SOURCES, calibration_windows, evaluation_windows, source_text
from armor.pipeline.models import load_tokenizer


def test_offline_sources_split_by_article_without_overlap():
    for source in ("gensim_wiki", "gensim_news"):
        calibration = set(SOURCES[source].documents("calibration"))
        evaluation = set(SOURCES[source].documents("evaluation"))
        assert calibration and evaluation
        assert not calibration & evaluation


def test_calibration_windows_are_seeded(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    a = calibration_windows(tok, "gensim_news", nsamples=6, seqlen=32, seed=0)
    b = calibration_windows(tok, "gensim_news", nsamples=6, seqlen=32, seed=0)
    c = calibration_windows(tok, "gensim_news", nsamples=6, seqlen=32, seed=1)
    assert a.shape == (6, 32) and a.dtype == torch.int64
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_evaluation_windows_are_consecutive_and_capped(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    full = evaluation_windows(tok, "gensim_news", seqlen=128)
    capped = evaluation_windows(tok, "gensim_news", seqlen=128, max_windows=3)
    tokens = torch.tensor(tok(source_text("gensim_news", "evaluation"))["input_ids"])
    assert full.shape[0] == tokens.numel() // 128
    assert torch.equal(full.flatten(), tokens[: full.numel()])
    assert torch.equal(capped, full[:3])
