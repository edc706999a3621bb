"""Ranking metrics against brute-force references and cases whose answer is known by construction."""
import numpy as np
import pytest

from flame_pipeline.eval.metrics import (first_relevant_rank, pair_relation, recall_at_k,
                                         retrieval_recalls, topk_accuracy)


def brute_rank(sim: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Per-query Python loop: sort by score, irrelevant before relevant on ties, find the first hit."""
    out = []
    for s, r in zip(sim, rel):
        order = sorted(range(len(s)), key=lambda j: (-s[j], bool(r[j])))
        out.append(next(pos for pos, j in enumerate(order) if r[j]))
    return np.array(out)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_identity_embeddings_give_perfect_recall():
    emb = np.eye(50, dtype=np.float32)
    rel = pair_relation([f"img{i}" for i in range(50)], [f"txt{i}" for i in range(50)])
    out = retrieval_recalls(emb, emb, rel.relation, [1, 5, 10])
    assert out == {f"{d}_R@{k}": 100.0 for d in ("i2t", "t2i") for k in (1, 5, 10)}


def test_shuffled_pairs_give_chance_recall():
    rng = np.random.default_rng(0)
    n = 1000
    img = unit(rng.normal(size=(n, 64)).astype(np.float32))
    txt = img[rng.permutation(n)]          # every text belongs to a random other image
    rel = np.eye(n, dtype=bool)
    out = retrieval_recalls(img, txt, rel, [1, 10])
    for d in ("i2t", "t2i"):
        assert out[f"{d}_R@1"] <= 0.6      # chance 0.1 %
        assert out[f"{d}_R@10"] <= 2.5     # chance 1 %


def test_random_scores_match_brute_force_with_ties():
    rng = np.random.default_rng(1)
    sim = rng.integers(0, 4, size=(40, 30)).astype(np.float32)  # many ties
    rel = rng.random((40, 30)) < 0.1
    rel[np.arange(40), rng.integers(0, 30, 40)] = True
    np.testing.assert_array_equal(first_relevant_rank(sim, rel), brute_rank(sim, rel))
    ranks = brute_rank(sim, rel)
    got = recall_at_k(sim, rel, [1, 3, 7])
    assert got == {k: pytest.approx(100 * np.mean(ranks < k)) for k in (1, 3, 7)}


def test_ties_count_against_the_model():
    sim = np.ones((4, 4), dtype=np.float32)   # a constant embedding
    assert recall_at_k(sim, np.eye(4, dtype=bool), [1, 4]) == {1: 0.0, 4: 100.0}


def test_duplicate_aware_relation():
    # rows: the same image (sha a) with two captions; one caption shared by two images
    images = ["a", "a", "b", "c"]
    texts = ["red cube", "a cube", "blue ball", "red cube"]
    rel = pair_relation(images, texts)
    assert rel.image_rows.tolist() == [0, 2, 3]
    assert rel.text_rows.tolist() == [0, 1, 2]
    assert rel.relation.tolist() == [[True, True, False],
                                     [False, False, True],
                                     [True, False, False]]


def test_duplicates_are_not_penalised():
    # image a has two captions; the text "red cube" belongs to images a and c
    images, texts = ["a", "a", "b", "c"], ["red cube", "a cube", "blue ball", "red cube"]
    img_of = {"a": [1, 0, 0], "b": [0, 1, 0], "c": [0, 0, 1]}
    txt_of = {"red cube": [0.6, 0, 0.8], "a cube": [1, 0, 0], "blue ball": [0, 1, 0]}
    rel = pair_relation(images, texts)
    img = np.array([img_of[images[i]] for i in rel.image_rows], dtype=np.float32)
    txt = np.array([txt_of[texts[j]] for j in rel.text_rows], dtype=np.float32)
    # every query's first hit is one of its own: a -> "a cube", "red cube" -> c
    assert set(retrieval_recalls(img, txt, rel.relation, [1]).values()) == {100.0}
    # the naive row-diagonal protocol would count image a's first row as a miss
    row_img = np.array([img_of[i] for i in images], dtype=np.float32)
    row_txt = np.array([txt_of[t] for t in texts], dtype=np.float32)
    naive = recall_at_k(row_img @ row_txt.T, np.eye(4, dtype=bool), [1])
    assert naive[1] < 100.0


def test_topk_accuracy_is_recall_with_one_hot_classes():
    logits = np.array([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]])
    labels = np.array([1, 2, 0])
    assert topk_accuracy(logits, labels, [1, 2, 3]) == {1: pytest.approx(100 / 3),
                                                       2: pytest.approx(200 / 3), 3: 100.0}


@pytest.mark.parametrize("sim, rel, message", [
    (np.zeros((2, 3)), np.zeros((2, 2), bool), "same shape"),
    (np.zeros((2, 2)), np.array([[True, False], [False, False]]), "no relevant"),
    (np.array([[np.nan, 0], [0, 0]]), np.eye(2, dtype=bool), "NaN"),
])
def test_bad_input_is_a_clear_error(sim, rel, message):
    with pytest.raises(ValueError, match=message):
        recall_at_k(sim, rel, [1])


def test_label_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="labels must lie"):
        topk_accuracy(np.zeros((2, 3)), [0, 3], [1])
