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


def test_an_onnx_exports_text_embeddings_are_encoded_once_and_read_back_unchanged(monkeypatch, tmp_path):
    """A tagger's vocabulary prompts on restart: an ONNX export's rows come from the cache; a torch model has no
    outputs identity and is always asked."""
    import vitrine.embed.encode as encode
    from vitrine.models import create_model

    onnx = create_model("vitrine:small", runtime="onnx")
    kurta, watch = f"a crimson kurta ({tmp_path})", f"a teal watch ({tmp_path})"  # new to the run's shared cache
    texts = [kurta, watch, kurta]
    direct = encode.encode_texts(onnx, texts)
    asked = []
    real = encode.encode_texts
    monkeypatch.setattr(encode, "encode_texts", lambda model, texts: asked.append(list(texts)) or real(model, texts))
    first = text_cache.encoder_text_embeddings(onnx, texts)
    again = text_cache.encoder_text_embeddings(create_model("vitrine:small", runtime="onnx"), texts[::-1])
    assert asked == [[kurta, watch]]
    assert torch.allclose(first, direct, atol=1e-6) and torch.equal(again, first.flip(0))
    torch_model = create_model("vitrine:small")
    assert getattr(torch_model, "outputs_identity", None) is None
    text_cache.encoder_text_embeddings(torch_model, texts[:1])
    assert asked[-1] == texts[:1]
