import torch

import vitrine.embed.text_cache as text_cache


def test_cache_encodes_each_string_once_and_keeps_order(tmp_path, small_model, monkeypatch):
    calls = []
    real = text_cache._encode
    monkeypatch.setattr(
        text_cache, "_encode", lambda model, strings, *a: calls.append(list(strings)) or real(model, strings, *a)
    )
    first = text_cache.pooled_text_features(small_model, ["a red dress", "blue jeans"], tmp_path, progress=False)
    second = text_cache.pooled_text_features(
        small_model, ["blue jeans", "a green watch", "a red dress"], tmp_path, progress=False
    )
    assert calls == [["a red dress", "blue jeans"], ["a green watch"]]
    assert torch.equal(second[0], first[1]) and torch.equal(second[2], first[0])
    with torch.no_grad():
        direct = small_model.text(small_model.text.tokenize(["a green watch"]))[2]
    assert torch.allclose(second[1], direct[0], atol=1e-5)
