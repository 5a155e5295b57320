import torch

from seem_ros.model import TINY
from seem_ros.model.language import EOT, SOT, TextEncoder, Tokenizer


def test_clip_ids():
    ids, att = Tokenizer()(["the red mug", "The  RED mug", ""])
    assert ids[0, :5].tolist() == [SOT, 518, 736, 9722, EOT] == [49406, 518, 736, 9722, 49407]
    assert torch.equal(ids[0], ids[1])                          # CLIP lower-cases, squeezes spaces
    assert att[0].sum() == 5 and ids.shape == (3, 77)
    assert ids[2, :2].tolist() == [SOT, EOT] and att[2].sum() == 2


def test_long_text_truncated_with_eot_last():
    ids, att = Tokenizer()(["mug " * 5000])
    assert att.sum() == 77 and ids[0, 0] == SOT and ids[0, 76] == EOT


def test_causal_and_vocabulary():
    torch.manual_seed(0)
    enc = TextEncoder(TINY.language).eval()
    tok = Tokenizer()
    a, att = tok(["red cube on the table"])
    b = a.clone()
    b[0, 4] = 1000                                              # change a later token
    ta, _ = enc.encode_tokens(a, att)
    tb, _ = enc.encode_tokens(b, att)
    assert torch.allclose(ta[0, :4], tb[0, :4]) and not torch.allclose(ta[0, 4], tb[0, 4])
    v = enc.encode_vocabulary(["mug", "cube"])
    assert v.shape == (2, TINY.language.proj_dim)
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(2))
    assert torch.equal(v, enc.encode_vocabulary(["mug", "cube"]))
