"""Tests of rbm_cuda.datasets: loaders on the real files under $RBM_CUDA_DATA (marked ``data``,
skipped without them), bad input written to tmp_path, RatingData, load() resolution and the
offline error. No test uses the network."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import time
import zipfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from rbm_cuda.datasets import (
    DataError,
    RatingData,
    bundled_path,
    from_dataframe,
    load,
    load_bundled,
    load_csv,
    load_goodbooks,
    load_movielens_1m,
    load_movielens_100k,
    load_movielens_100k_split,
    load_movielens_csv,
)
from rbm_cuda.datasets import resolve
from rbm_cuda.datasets.movielens import read_movies_dat

HALF = np.arange(1, 11) / 2.0
WHOLE = np.arange(1.0, 6.0)


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def data_root() -> Path:
    """$RBM_CUDA_DATA (the shared data sets), or skip."""
    path = os.environ.get("RBM_CUDA_DATA")
    if not path or not os.path.isdir(path):
        pytest.skip("RBM_CUDA_DATA is not set to the folder of data sets")
    return Path(path)


def need(root: Path, *rel: str) -> Path:
    """root/rel..., or skip naming the missing file."""
    for r in rel:
        if not (root / r).exists():
            pytest.skip(f"{root / r} is missing")
    return root / rel[0]


@pytest.fixture(scope="module")
def ml100k(data_root) -> RatingData:
    return load_movielens_100k(need(data_root, "ml-100k", "ml-100k/u.data"))


@pytest.fixture(scope="module")
def goodbooks_last(data_root) -> RatingData:
    folder = need(data_root, "goodbooks-10k", "goodbooks-10k/books.csv", "goodbooks-10k/v1/ratings.csv")
    return load_goodbooks(folder, duplicates="last")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No test reaches the network or the user's cache: downloads fail loudly, the cache is empty."""

    def no_network(*a, **k):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(resolve, "urlopen", no_network)
    monkeypatch.setenv("RBM_CUDA_CACHE", str(tmp_path / "empty-cache"))


def write(path: Path, text: str, encoding="utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def assert_canonical(d: RatingData):
    m = d.ratings
    assert sp.isspmatrix_csr(m)
    assert m.dtype == np.float32 and m.indptr.dtype == m.indices.dtype
    m.tocoo()  # scipy routines accept the index arrays
    assert m.shape == (d.n_users, d.n_items)
    for r in range(0, d.n_users, max(1, d.n_users // 50)):
        row = m.indices[m.indptr[r]: m.indptr[r + 1]]
        assert np.all(np.diff(row) > 0)
    assert d.levels.dtype == np.float64 and np.all(np.diff(d.levels) > 0)
    assert np.isin(m.data, d.levels.astype(np.float32)).all()
    for ids in (d.user_ids, d.item_ids):
        assert ids.dtype == np.int64 or ids.dtype.kind == "U"


# ------------------------------------------------------------------------------------------ ml-100k
@pytest.mark.data
def test_ml100k_counts_and_values(ml100k):
    d = ml100k
    assert_canonical(d)
    assert (d.n_users, d.n_items, d.nnz) == (943, 1682, 100_000)
    assert d.name == "ml-100k"
    np.testing.assert_array_equal(d.levels, WHOLE)
    np.testing.assert_array_equal(d.user_ids, np.arange(1, 944))
    np.testing.assert_array_equal(d.item_ids, np.arange(1, 1683))
    values, counts = np.unique(d.ratings.data, return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist())) == {1: 6110, 2: 11370, 3: 27145, 4: 34174, 5: 21201}
    # first line of u.data: 196 242 3 881250949; third: 22 377 1
    assert d.ratings[d.user_index(196), d.item_index(242)] == 3
    assert d.ratings[d.user_index(22), d.item_index(377)] == 1
    assert d.to_read is None


@pytest.mark.data
def test_ml100k_titles_are_latin1_and_genres(ml100k):
    d = ml100k
    assert list(d.items.columns[:2]) == ["title", "genres"]
    assert d.title(d.item_index(543)) == "Misérables, Les (1995)"
    assert d.items["genres"].iat[d.item_index(1)] == "Animation|Children's|Comedy"
    assert d.items["genres"].iat[d.item_index(543)] == "Drama|Musical"
    assert not d.items["title"].str.contains("\ufffd").any()
    found = d.find_items("MISÉR")
    assert found["item_id"].tolist() == [543]
    assert found.columns.tolist() == ["item_id", "title", "n_ratings"]
    assert found["n_ratings"].iat[0] == d.ratings[:, d.item_index(543)].nnz == 21


@pytest.mark.data
@pytest.mark.parametrize("split,n_train,n_test", [("u1", 80_000, 20_000), ("ua", 90_570, 9_430)])
def test_ml100k_splits(data_root, ml100k, split, n_train, n_test):
    train, test = load_movielens_100k_split(need(data_root, "ml-100k", f"ml-100k/{split}.base"), split)
    assert (train.nnz, test.nnz) == (n_train, n_test)
    for part in (train, test):
        assert_canonical(part)
        np.testing.assert_array_equal(part.user_ids, ml100k.user_ids)
        np.testing.assert_array_equal(part.item_ids, ml100k.item_ids)
    # train and test are disjoint and together are u.data
    assert train.ratings.multiply(test.ratings).nnz == 0
    assert (train.ratings + test.ratings != ml100k.ratings).nnz == 0
    if split == "ua":
        assert np.all(np.diff(test.ratings.indptr) == 10)


def test_ml100k_split_name_checked(tmp_path):
    with pytest.raises(ValueError, match="u1, u2, u3, u4, u5, ua, ub"):
        load_movielens_100k_split(tmp_path, "u6")


@pytest.mark.data
def test_ml100k_maps_from_u_data_without_user_list(data_root, tmp_path):
    src = need(data_root, "ml-100k", "ml-100k/u.data", "ml-100k/u.item")
    lines = (src / "u.data").read_text().splitlines()[:200]
    write(tmp_path / "u.data", "\n".join(lines) + "\n")
    shutil.copy(src / "u.item", tmp_path / "u.item")  # items: all 1682 of u.item; users: those seen
    d = load_movielens_100k(tmp_path)
    users = sorted({int(x.split("\t")[0]) for x in lines})
    assert d.user_ids.tolist() == users
    assert d.n_items == 1682 and d.nnz == 200
    assert d.title(d.item_index(543)) == "Misérables, Les (1995)"
    assert d.items["genres"].iat[d.item_index(543)] == "Drama|Musical"  # names from the built-in list


def test_ml100k_rating_for_item_missing_from_u_item(tmp_path):
    write(tmp_path / "u.data", "1\t1\t5\t0\n1\t3\t4\t0\n")
    write(tmp_path / "u.item", "1|A (1990)|01-Jan-1990||url" + "|0" * 19 + "\n2|B|||" + "|0" * 19 + "\n")
    with pytest.raises(DataError) as e:
        load_movielens_100k(tmp_path)
    msg = str(e.value)
    assert "u.data, line 2" in msg and "item id 3" in msg and "u.item" in msg


# ------------------------------------------------------------------------------------------ ml-1m
@pytest.mark.data
def test_ml1m_movies_dat_real(data_root):
    ids, table = read_movies_dat(need(data_root, "ml-1m/movies.dat"))
    assert len(ids) == 3883 and ids.max() == 3952
    assert table.loc[73, "title"] == "Misérables, Les (1995)"
    assert table.loc[1, "genres"] == "Animation|Children's|Comedy"


@pytest.mark.data
def test_ml1m_parser_on_a_small_ratings_dat(data_root, tmp_path):
    src = need(data_root, "ml-1m", "ml-1m/movies.dat", "ml-1m/users.dat")
    shutil.copy(src / "movies.dat", tmp_path / "movies.dat")
    shutil.copy(src / "users.dat", tmp_path / "users.dat")
    write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n6040::73::4::956703954\n")
    d = load_movielens_1m(tmp_path)
    assert_canonical(d)
    assert (d.n_users, d.n_items, d.nnz) == (6040, 3883, 3)
    assert d.name == "ml-1m"
    assert d.ratings[d.user_index(6040), d.item_index(73)] == 4
    assert d.title(d.item_index(73)) == "Misérables, Les (1995)"


def test_ml1m_errors_name_file_and_line(tmp_path):
    write(tmp_path / "ratings.dat", "1::10::5::978300760\n1\t11\t3\t978302109\n")
    with pytest.raises(DataError) as e:
        load_movielens_1m(tmp_path)
    msg = str(e.value)
    assert "ratings.dat, line 2" in msg and "separated by '::'" in msg and "found 1" in msg
    assert "is the separator '\\t'?" in msg
    write(tmp_path / "ratings.dat", "1::10::5::978300760\n1::11::six::978302109\n")
    with pytest.raises(DataError, match=r"ratings.dat, line 2: rating 'six'"):
        load_movielens_1m(tmp_path)
    write(tmp_path / "ratings.dat", "1::10::5::978300760\n")
    write(tmp_path / "movies.dat", "11::Other (1990)::Drama\n")
    with pytest.raises(DataError, match=r"ratings.dat, line 1: item id 10 is not in .*movies.dat"):
        load_movielens_1m(tmp_path)


# ------------------------------------------------------------------------------------------ CSV releases
@pytest.mark.data
def test_ml_latest_small_real(data_root):
    d = load_movielens_csv(need(data_root, "ml-latest-small", "ml-latest-small/ratings.csv"))
    assert_canonical(d)
    assert (d.nnz, d.n_users, d.n_items) == (100_836, 610, 9_742)
    assert d.name == "ml-latest-small"
    np.testing.assert_array_equal(d.levels, HALF)
    counts = dict(zip(*[a.tolist() for a in np.unique(d.ratings.data, return_counts=True)]))
    assert counts[0.5] == 1370 and counts[3.5] == 13136 and counts[5.0] == 13211
    assert (d.item_counts() == 0).sum() == 9742 - 9724  # movies of movies.csv nobody rated
    # quoted titles with commas, and no '\r' left from the CRLF line endings
    assert d.title(d.item_index(11)) == "American President, The (1995)"
    assert d.items["genres"].iat[d.item_index(11)] == "Comedy|Drama|Romance"
    assert not d.items["genres"].str.endswith("\r").any()
    assert not d.items["title"].str.contains("\r").any()


def test_movielens_csv_crlf_and_half_stars(tmp_path):
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\r\n1,5,3.5,1\r\n2,5,0.5,2\r\n2,9,5.0,3\r\n")
    write(tmp_path / "movies.csv", 'movieId,title,genres\r\n5,"Movie, The (1999)",Drama\r\n9,Other,(no genres listed)\r\n')
    d = load_movielens_csv(tmp_path)
    np.testing.assert_array_equal(d.levels, HALF)
    assert d.ratings[d.user_index(1), d.item_index(5)] == 3.5
    assert d.title(0) == "Movie, The (1999)" and d.items["genres"].tolist() == ["Drama", "(no genres listed)"]
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\r\n1,5,3.5,1\r\n2,5,5.5,2\r\n")
    with pytest.raises(DataError) as e:
        load_movielens_csv(tmp_path)
    assert "ratings.csv, line 3: rating 5.5 is not one of the allowed levels [0.5, 1, 1.5," in str(e.value)


@pytest.mark.data
def test_bundled_is_the_shared_ml_latest_small(data_root):
    shared = need(data_root, "ml-latest-small", "ml-latest-small/ratings.csv", "ml-latest-small/movies.csv")
    for name in ("ratings.csv", "movies.csv"):
        with gzip.open(bundled_path() / f"{name}.gz", "rb") as f:
            assert f.read() == (shared / name).read_bytes(), name
    a, b = load(), load_movielens_csv(shared)
    assert a.name == "ml-latest-small" and a.nnz == 100_836
    assert (a.ratings != b.ratings).nnz == 0
    np.testing.assert_array_equal(a.ratings.indptr, b.ratings.indptr)
    np.testing.assert_array_equal(a.user_ids, b.user_ids)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    pd.testing.assert_frame_equal(a.items, b.items)


def test_bundled_is_small_and_shipped():
    files = sorted(p.name for p in bundled_path().iterdir())
    assert files == ["movies.csv.gz", "ratings.csv.gz"]
    assert sum(p.stat().st_size for p in bundled_path().iterdir()) < 1.5e6
    notice = (bundled_path().parent / "NOTICE.md").read_text()
    for needle in ("GroupLens", "2018", "Harper", "Konstan", "commercial", "endorse", "same conditions"):
        assert needle in notice
    d = load_bundled()
    assert (d.n_users, d.n_items, d.nnz) == (610, 9742, 100_836)
    np.testing.assert_array_equal(d.levels, HALF)


# ------------------------------------------------------------------------------------------ goodbooks
@pytest.mark.data
def test_goodbooks_v1_duplicates_raise_by_default(data_root):
    folder = need(data_root, "goodbooks-10k", "goodbooks-10k/v1/ratings.csv")
    with pytest.raises(DataError) as e:
        load_goodbooks(folder, to_read=False)
    msg = str(e.value)
    assert "v1/ratings.csv" in msg
    assert "2209 (user, item) pairs" in msg and "2278 surplus rows" in msg and "633 of these pairs" in msg
    assert "user 7, item 4608 rated 3 (line 459830), 2 (line 459831)" in msg
    assert "duplicates='last'" in msg


@pytest.mark.data
def test_goodbooks_last(goodbooks_last):
    d = goodbooks_last
    assert_canonical(d)
    assert (d.n_users, d.n_items, d.nnz) == (53_424, 10_000, 981_756 - 2_278)
    np.testing.assert_array_equal(d.item_ids, np.arange(1, 10_001))
    np.testing.assert_array_equal(d.levels, WHOLE)
    assert d.ratings[d.user_index(7), d.item_index(4608)] == 2  # lines 459830 (3) then 459831 (2)
    assert d.ratings[d.user_index(314), d.item_index(1)] == 5  # line 2: 1,314,5 (book_id first in v1)
    assert {"title", "authors"} <= set(d.items.columns)
    t = d.title(d.item_index(1))
    assert "The Hunger Games" in t and "Suzanne Collins" in t
    assert "J.K. Rowling, Mary GrandPré" in d.title(d.item_index(2))


@pytest.mark.data
def test_goodbooks_to_read(goodbooks_last):
    tr = goodbooks_last.to_read
    assert tr is not None and tr.shape == goodbooks_last.ratings.shape
    assert tr.dtype == np.bool_ and tr.nnz == 912_705
    assert (np.diff(tr.indptr) > 0).sum() == 48_871
    d = goodbooks_last
    assert tr[d.user_index(1), d.item_index(112)] and tr[d.user_index(7), d.item_index(10)]
    assert not tr[d.user_index(1), d.item_index(1)]


@pytest.mark.data
def test_goodbooks_mean(data_root):
    folder = need(data_root, "goodbooks-10k", "goodbooks-10k/v1/ratings.csv")
    d = load_goodbooks(folder, duplicates="mean", to_read=False)
    assert d.nnz == 979_478 and d.to_read is None
    assert d.ratings[d.user_index(7), d.item_index(4608)] == 3  # 2 and 3: 2.5, halves up
    np.testing.assert_array_equal(d.levels, WHOLE)
    assert np.isin(d.ratings.data, d.levels.astype(np.float32)).all()
    from rbm_cuda import RBM

    RBM(n_hidden=2, epochs=0, device="cpu").fit(d)  # every rating is one of the model's levels


def test_goodbooks_column_order_from_header(tmp_path):
    books = "book_id,goodreads_book_id,authors,title\n1,10,Ann,First\n2,20,\"Bo, Cy\",Second\n3,30,Di,Third\n"
    write(tmp_path / "books.csv", books)
    write(tmp_path / "ratings.csv", "user_id,book_id,rating\n5,1,4\n5,2,3\n9,1,1\n")
    v2 = load_goodbooks(tmp_path)
    write(tmp_path / "v1" / "ratings.csv", "book_id,user_id,rating\n1,5,4\n2,5,3\n1,9,1\n")
    (tmp_path / "ratings.csv").unlink()
    v1 = load_goodbooks(tmp_path)
    for d in (v1, v2):
        assert d.user_ids.tolist() == [5, 9] and d.item_ids.tolist() == [1, 2, 3]
        assert d.ratings.toarray().tolist() == [[4, 3, 0], [1, 0, 0]]
        assert d.title(1) == "Second by Bo, Cy"
    write(tmp_path / "to_read.sorted.csv", "user_id,book_id\n5,3\n11,2\n")
    d = load_goodbooks(tmp_path)
    assert d.user_ids.tolist() == [5, 9, 11]  # a user with a to-read list only is kept
    assert d.to_read.toarray().tolist() == [[False, False, True], [False, False, False], [False, True, False]]
    write(tmp_path / "to_read.sorted.csv", "user_id,book_id\n5,4\n")
    with pytest.raises(DataError, match=r"to_read.sorted.csv, line 2: item id 4 is not in .*books.csv"):
        load_goodbooks(tmp_path)


def test_goodbooks_missing_ratings(tmp_path):
    write(tmp_path / "books.csv", "book_id,authors,title\n1,A,B\n")
    with pytest.raises(DataError, match=r"no ratings file; expected .*ratings.csv or .*v1/ratings.csv"):
        load_goodbooks(tmp_path)


# ------------------------------------------------------------------------------------------ bad input
def test_missing_file_names_path_and_expectation(tmp_path):
    with pytest.raises(DataError) as e:
        load_movielens_100k(tmp_path)
    assert str(tmp_path / "u.data") in str(e.value) and "expected the MovieLens 100K ratings" in str(e.value)
    with pytest.raises(DataError, match="does not exist; expected the MovieLens 100K"):
        load_movielens_100k(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"nope.csv does not exist; expected a table of ratings"):
        load_csv(tmp_path / "nope.csv")


def test_comma_file_read_as_tab(tmp_path):
    write(tmp_path / "u.data", "1,2,3,4\n5,6,7,8\n")
    with pytest.raises(DataError) as e:
        load_movielens_100k(tmp_path)
    assert str(e.value) == (
        f"{tmp_path / 'u.data'}, line 1: expected 4 fields separated by '\\t', found 1: '1,2,3,4'; "
        f"is the separator ','?"
    )


def test_tab_file_read_as_comma(tmp_path):
    write(tmp_path / "r.csv", "user\titem\trating\n1\t2\t3\n")
    with pytest.raises(DataError) as e:
        load_csv(tmp_path / "r.csv")
    msg = str(e.value)
    assert "r.csv, line 1" in msg and "missing user, item, rating" in msg and "is the separator '\\t'?" in msg


def test_comma_line_inside_a_tab_file(tmp_path):
    write(tmp_path / "u.data", "1\t2\t3\t4\n1\t3\t4\t5\n1,4,3,5\n")
    with pytest.raises(DataError, match=r"u.data, line 3: expected 4 fields separated by '\\t', found 1: "
                       r"'1,4,3,5'; is the separator ','\?"):  # fmt: skip
        load_movielens_100k(tmp_path)


@pytest.mark.parametrize(
    "text,line,found",
    [("user,item,rating\na,x,1\nb,x\n", 3, 2), ("user,item,rating\na,x,1\n\nb,x,2,5\n", 4, 4)],
)
def test_wrong_field_counts(tmp_path, text, line, found):
    write(tmp_path / "r.csv", text)
    with pytest.raises(DataError, match=rf"r.csv, line {line}: expected 3 fields separated by ',', found {found}"):
        load_csv(tmp_path / "r.csv")


def test_non_numeric_rating_line_numbers(tmp_path):
    # header is line 1; a blank line (3) is skipped but still counted
    write(tmp_path / "r.csv", "user,item,rating\na,x,4\n\nb,x,4\nc,y,four\n")
    with pytest.raises(DataError) as e:
        load_csv(tmp_path / "r.csv")
    assert str(e.value) == f"{tmp_path / 'r.csv'}, line 5: rating 'four' (column 'rating') is not a number"
    write(tmp_path / "u.data", "1\t2\t3\t4\n1\t3\tNaN\t5\n")
    with pytest.raises(DataError, match=r"u.data, line 2: rating 'NaN' \(column 'rating'\) is not a number"):
        load_movielens_100k(tmp_path)
    write(tmp_path / "r.csv", "user,item,rating\na,x,4\nb,y,\n")
    with pytest.raises(DataError, match=r"r.csv, line 3: rating \(column 'rating'\) is missing"):
        load_csv(tmp_path / "r.csv")


def test_rating_outside_levels(tmp_path):
    write(tmp_path / "u.data", "1\t2\t3\t4\n1\t3\t4\t5\n2\t3\t6\t5\n2\t4\t0\t5\n")
    with pytest.raises(DataError) as e:
        load_movielens_100k(tmp_path)
    assert str(e.value) == (
        f"{tmp_path / 'u.data'}, line 3: rating 6 is not one of the allowed levels [1, 2, 3, 4, 5] "
        f"(2 ratings are outside the levels)"
    )
    write(tmp_path / "r.csv", "user,item,rating\na,x,4\nb,x,2.5\n")
    with pytest.raises(DataError, match=r"r.csv, line 3: rating 2.5 is not one of the allowed levels \[1, 2, 3, 4\]"):
        load_csv(tmp_path / "r.csv", levels=[1, 2, 3, 4])


def test_non_integer_id_in_movielens(tmp_path):
    write(tmp_path / "u.data", "1\t2\t3\t4\nu7\t3\t4\t5\n")
    with pytest.raises(DataError, match=r"u.data, line 2: user id 'u7' \(column 'user'\) is not an integer id"):
        load_movielens_100k(tmp_path)


def test_bad_encoding_names_line(tmp_path):
    (tmp_path / "r.csv").write_bytes(b"user,item,rating\na,x,4\nb,\xe9t\xe9,3\n")
    with pytest.raises(DataError, match=r"r.csv, line 3: byte b'\\xe9' is not valid utf-8"):
        load_csv(tmp_path / "r.csv")
    d = load_csv(tmp_path / "r.csv", encoding="latin-1")
    assert d.item_ids.tolist() == ["x", "été"]


def test_empty_data_sets(tmp_path):
    write(tmp_path / "r.csv", "user,item,rating\n")
    with pytest.raises(DataError, match=r"r.csv has no data rows"):
        load_csv(tmp_path / "r.csv")
    write(tmp_path / "e.csv", "")
    with pytest.raises(DataError, match=r"e.csv is empty"):
        load_csv(tmp_path / "e.csv")
    with pytest.raises(DataError, match="empty"):
        from_dataframe(pd.DataFrame({"user": [], "item": [], "rating": []}))


# ------------------------------------------------------------------------------------------ duplicates
DUP = "user,item,rating\na,x,1\nb,x,2\na,x,3\nb,y,5\nb,x,2\na,x,1\n"


def test_duplicates_error_message(tmp_path):
    write(tmp_path / "r.csv", DUP)
    with pytest.raises(DataError) as e:
        load_csv(tmp_path / "r.csv")
    assert str(e.value).startswith(
        f"{tmp_path / 'r.csv'}: 2 (user, item) pairs occur more than once (3 surplus rows); 1 of these "
        f"pairs have conflicting ratings. Example: user 'a', item 'x' rated 1 (line 2), 3 (line 4), 1 (line 7)."
    )
    with pytest.raises(ValueError, match="duplicates must be one of"):
        load_csv(tmp_path / "r.csv", duplicates="first")


def test_duplicates_last_and_mean(tmp_path):
    write(tmp_path / "r.csv", DUP)
    last = load_csv(tmp_path / "r.csv", duplicates="last")
    assert last.nnz == 3
    assert last.ratings[last.user_index("a"), last.item_index("x")] == 1
    assert last.ratings[last.user_index("b"), last.item_index("x")] == 2
    np.testing.assert_array_equal(last.levels, [1, 2, 3, 5])
    mean = load_csv(tmp_path / "r.csv", duplicates="mean", levels=[1, 2, 3, 4, 5])
    assert mean.ratings[mean.user_index("a"), mean.item_index("x")] == 2  # 5 / 3, to the nearest level
    assert mean.ratings[mean.user_index("b"), mean.item_index("x")] == 2
    np.testing.assert_array_equal(mean.levels, [1, 2, 3, 4, 5])


def test_duplicates_in_dataframe_name_rows():
    df = pd.DataFrame({"user": [1, 2, 1], "item": [7, 7, 7], "rating": [4, 4, 5]}, index=[10, 11, 12])
    with pytest.raises(DataError, match=r"user 1, item 7 rated 4 \(row 0\), 5 \(row 2\)"):
        from_dataframe(df, name="mine")
    d = from_dataframe(df, duplicates="mean")  # 4 and 5 average to 4.5, a half: up to 5
    assert d.ratings[d.user_index(1), d.item_index(7)] == 5
    np.testing.assert_array_equal(d.levels, [4, 5])


# ------------------------------------------------------------------------------------------ generic tables
def test_from_dataframe_ids_and_items():
    df = pd.DataFrame({"u": ["bob", "al", "bob"], "i": [3, 1, 1], "r": [1.0, 2.0, 2.0]})
    items = pd.DataFrame({"i": [1, 2, 3], "title": ["One", "Two", "Three"]})
    d = from_dataframe(df, "u", "i", "r", name="t", items=items)
    assert_canonical(d)
    assert d.user_ids.dtype.kind == "U" and d.user_ids.tolist() == ["al", "bob"]
    assert d.item_ids.dtype == np.int64 and d.item_ids.tolist() == [1, 2, 3]
    assert d.ratings.toarray().tolist() == [[2, 0, 0], [2, 0, 1]]
    assert d.title(2) == "Three" and d.find_items("t")["item_id"].tolist() == [3, 2]  # not "One"
    with pytest.raises(DataError, match=r"missing column 'rating'; found columns \['u', 'i', 'r'\]"):
        from_dataframe(df, "u", "i")
    with pytest.raises(DataError, match=r"t, row 1: item id 9 is not in the items table"):
        from_dataframe(df.assign(i=[1, 9, 1]), "u", "i", "r", name="t", items=items)
    with pytest.raises(DataError, match=r"t, row 2 \(index 'c'\): rating \(column 'r'\) is missing; expected a number"):
        from_dataframe(df.assign(r=[1, 2, np.nan]).set_axis(["a", "b", "c"]), "u", "i", "r", name="t")


def test_load_csv_other_separator_and_columns(tmp_path):
    write(tmp_path / "r.txt", "who;what;stars;when\n1;a;4;0\n2;b;2;0\n")
    d = load_csv(tmp_path / "r.txt", "who", "what", "stars", sep=";", levels=[1, 2, 3, 4, 5])
    assert d.name == "r.txt" and d.source == str(tmp_path / "r.txt")
    np.testing.assert_array_equal(d.levels, WHOLE)
    assert d.ratings[d.user_index(1), d.item_index("a")] == 4
    assert d.items is None and d.title(0) == "a"


# ------------------------------------------------------------------------------------------ RatingData
def small(**kw) -> RatingData:
    m = sp.csr_matrix(np.array([[5, 0, 3], [0, 1, 0]], dtype=np.float32))
    args = dict(ratings=m, user_ids=[10, 20], item_ids=[7, 8, 9], levels=[1, 2, 3, 4, 5], name="small")
    args.update(kw)
    return RatingData(**args)


def test_rating_data_layout_and_validation():
    d = small()
    assert_canonical(d)
    assert (d.n_users, d.n_items, d.nnz) == (2, 3, 3)
    with pytest.raises(DataError, match=r"shape \(2, 3\) but there are 3 user ids"):
        small(user_ids=[1, 2, 3])
    with pytest.raises(DataError, match="sorted ascending"):
        small(levels=[5, 4, 3, 2, 1])
    with pytest.raises(DataError, match=r"rating 3 of user 10 on item 9 is not one of the levels \[1, 2, 4, 5\]"):
        small(levels=[1, 2, 4, 5])
    with pytest.raises(DataError, match="NaN or infinite"):
        small(ratings=sp.csr_matrix(np.array([[np.nan, 0, 3], [0, 1, 0]], dtype=np.float32)))
    with pytest.raises(DataError, match="items has 2 rows but there are 3 item ids"):
        small(items=pd.DataFrame({"title": ["a", "b"]}))
    with pytest.raises(DataError, match="repeated ids"):
        small(user_ids=[10, 10])
    # unsorted column indices are sorted; indptr and indices share one dtype
    m = sp.csr_matrix((np.array([3, 5, 1], np.float32), np.array([2, 0, 1]), np.array([0, 2, 3])), shape=(2, 3))
    d = small(ratings=m)
    assert d.ratings.indices.tolist() == [0, 2, 1] and d.ratings.data.tolist() == [5, 3, 1]
    assert d.ratings.indptr.dtype == d.ratings.indices.dtype


def test_rating_data_index_maps_and_with_ratings():
    d = small()
    assert d.user_index(20) == 1 and isinstance(d.user_index(20), int)
    assert d.item_index([9, 7]).tolist() == [2, 0]
    assert d.item_index(np.array([8.0])).tolist() == [1]
    with pytest.raises(KeyError, match=r"unknown item ids 1, 2 in small \(3 items\)"):
        d.item_index([7, 1, 2])
    with pytest.raises(KeyError, match="unknown user id 'x'"):
        d.user_index("x")
    s = small(user_ids=["a", "b"])
    assert s.user_ids.dtype.kind == "U" and s.user_index("b") == 1
    t = d.with_ratings(sp.csr_matrix(np.array([[0, 0, 1], [0, 0, 0]], dtype=np.float32)))
    assert t.nnz == 1 and t.item_ids is d.item_ids and t.name == "small"
    with pytest.raises(DataError, match="shape"):
        d.with_ratings(sp.csr_matrix((3, 3), dtype=np.float32))


def test_title_and_find_items_without_and_with_metadata():
    d = small()
    assert d.title(1) == "8"
    assert d.find_items("9")["item_id"].tolist() == [9]
    with pytest.raises(IndexError):
        d.title(3)
    m = small(items=pd.DataFrame({"title": ["Alpha", "beta", "Gamma"], "authors": ["X", "", "Z"]}))
    assert m.title(0) == "Alpha by X" and m.title(1) == "beta"
    f = m.find_items("A")  # case-insensitive; most rated first
    assert f.columns.tolist() == ["item_id", "title", "authors", "n_ratings"]
    assert f.index.tolist() == [0, 1, 2] and f["n_ratings"].tolist() == [1, 1, 1]


# ------------------------------------------------------------------------------------------ load()
def tiny_movielens(folder: Path, n_users: int) -> Path:
    rows = "".join(f"{u},1,4.0,0\n" for u in range(1, n_users + 1))
    write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n" + rows)
    write(folder / "movies.csv", "movieId,title,genres\n1,Only (2000),Drama\n")
    return folder


def test_load_resolution_order(tmp_path, monkeypatch):
    data, cache = tmp_path / "data", tmp_path / "cache"
    tiny_movielens(data / "ml-latest-small", 2)
    tiny_movielens(cache / "ml-latest-small", 3)
    explicit = tiny_movielens(tmp_path / "elsewhere", 4)
    monkeypatch.setenv("RBM_CUDA_DATA", str(data))
    monkeypatch.setenv("RBM_CUDA_CACHE", str(cache))
    assert load(explicit).n_users == 4  # a path first
    assert load(str(explicit)).source == str(explicit)
    assert load("ml-latest-small").n_users == 2  # then $RBM_CUDA_DATA/<name>
    shutil.rmtree(data / "ml-latest-small")
    d = load("ml-latest-small")
    assert d.n_users == 3 and d.source == str(cache / "ml-latest-small")  # then the cache
    shutil.rmtree(cache / "ml-latest-small")
    d = load("ml-latest-small")
    assert d.nnz == 100_836 and d.source == str(bundled_path())  # then the embedded copy
    assert load().source == str(bundled_path())  # no argument: the embedded copy


def test_load_incomplete_folder_is_skipped(tmp_path, monkeypatch):
    write(tmp_path / "data" / "ml-1m" / "movies.dat", "1::A (1990)::Drama\n")  # no ratings.dat
    monkeypatch.setenv("RBM_CUDA_DATA", str(tmp_path / "data"))
    with pytest.raises(DataError) as e:
        load("ml-1m", download=False)
    assert f"{tmp_path / 'data' / 'ml-1m'} (incomplete)" in str(e.value) and "download=False" in str(e.value)


def test_load_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("RBM_CUDA_DATA", str(tmp_path / "nothing-here"))
    calls = []

    def offline(url, *a, **k):
        calls.append(url)
        raise URLError("no network")

    monkeypatch.setattr(resolve, "urlopen", offline)
    with pytest.raises(DataError) as e:
        load("ml-100k")
    msg = str(e.value)
    assert calls == ["https://files.grouplens.org/datasets/movielens/ml-100k.zip"]
    assert "could not download ml-100k" in msg and "no network" in msg
    assert "RBM_CUDA_DATA" in msg and "pass the folder path" in msg
    assert not list((tmp_path / "empty-cache").glob("*.part"))


class FakeResponse(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def fake_zip(name: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"{name}/ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,0\n2,1,3.5,0\n")
        z.writestr(f"{name}/movies.csv", "movieId,title,genres\n1,Only (2000),Drama\n")
    return buf.getvalue()


def test_download_checks_sha256_and_unpacks_into_cache(tmp_path, monkeypatch):
    blob = fake_zip("ml-20m")
    monkeypatch.setattr(resolve, "urlopen", lambda url, **k: FakeResponse(blob))
    monkeypatch.setenv("RBM_CUDA_DATA", "")
    with pytest.raises(DataError, match=r"download of .*ml-20m.zip is corrupt"):  # the real checksum
        load("ml-20m")
    monkeypatch.setitem(resolve.KNOWN_ZIPS, "ml-20m", (len(blob), hashlib.sha256(blob).hexdigest()))
    d = load("ml-20m")
    cached = tmp_path / "empty-cache" / "ml-20m"
    assert d.nnz == 2 and d.name == "ml-20m" and d.source == str(cached)
    assert sorted(p.name for p in (tmp_path / "empty-cache").iterdir()) == ["ml-20m"]  # zip removed
    monkeypatch.setattr(resolve, "urlopen", lambda *a, **k: pytest.fail("cached copy not used"))
    assert load("ml-20m").nnz == 2


def test_load_detects_formats_and_reports_unknown(tmp_path):
    write(tmp_path / "a" / "u.data", "1\t1\t5\t0\n")
    assert load(tmp_path / "a").name == "ml-100k"
    write(tmp_path / "r.csv", "userId,movieId,rating\n1,2,4.5\n")
    d = load(tmp_path / "r.csv")
    assert d.name == "r.csv" and d.ratings[0, 0] == 4.5
    write(tmp_path / "g.csv", "user,item,rating\nu,i,1\n")
    assert load(tmp_path / "g.csv").user_ids.tolist() == ["u"]
    write(tmp_path / "bad.csv", "who,what,stars\n1,2,3\n")
    with pytest.raises(DataError, match=r"bad.csv, line 1: expected a header .* found columns \['who', 'what', 'stars'\]"):
        load(tmp_path / "bad.csv")
    assert load(tmp_path / "bad.csv", user_col="who", item_col="what", rating_col="stars").nnz == 1
    write(tmp_path / "b" / "notes.txt", "x")
    with pytest.raises(DataError, match=r"cannot tell which data set .* found notes.txt"):
        load(tmp_path / "b")
    with pytest.raises(DataError, match="not an existing file or folder, nor a known data set name"):
        load("ml-9m")


@pytest.mark.data
def test_load_by_name_from_rbm_cuda_data(data_root, monkeypatch):
    need(data_root, "ml-100k/u.data")
    monkeypatch.setenv("RBM_CUDA_DATA", str(data_root))
    d = load("ml-100k")
    assert d.nnz == 100_000 and d.source == str(data_root / "ml-100k")


# ------------------------------------------------------------------------------------------ speed
def test_building_a_million_ratings_is_fast():
    rng = np.random.default_rng(0)
    n = 1_000_000
    df = pd.DataFrame(
        {"user": rng.integers(1, 60_000, n), "item": rng.integers(1, 10_001, n), "rating": rng.integers(1, 6, n)}
    )
    t = time.perf_counter()
    d = from_dataframe(df, duplicates="last", levels=[1, 2, 3, 4, 5])
    elapsed = time.perf_counter() - t
    assert d.nnz == len(df.drop_duplicates(["user", "item"]))
    assert elapsed < 3.0, f"building a RatingData from 1M rows took {elapsed:.2f} s"


# ------------------------------------------------------------------------------------------ ids stay exact
def test_ids_at_or_above_2_63_stay_exact():
    big = np.array([2**63, 2**63 + 1, 5], dtype=np.uint64)
    df = pd.DataFrame({"user": big, "item": [1, 1, 2], "rating": [4, 5, 3]})
    d = from_dataframe(df)
    assert sorted(d.user_ids.tolist()) == sorted(["9223372036854775808", "9223372036854775809", "5"])
    assert d.n_users == 3


def test_float_ids_too_large_to_be_exact_are_refused_with_the_row():
    df = pd.DataFrame({"user": np.array([4611686018427387905, 4611686018427387904], dtype=np.float64),
                       "item": [1, 1], "rating": [4.0, 5.0]})
    with pytest.raises(DataError, match=r"row 0: user id .* not an id that a float64 column holds exactly"):
        from_dataframe(df)


def test_integral_ids_are_not_rewritten_beside_fractional_ones():
    df = pd.DataFrame({"user": [2.0, 1.5, 2.0], "item": [1, 1, 2], "rating": [4, 5, 3]})
    d = from_dataframe(df)
    assert sorted(d.user_ids.tolist()) == ["1.5", "2"]


def test_truncated_gzip_table_is_a_data_error(tmp_path):
    import gzip

    text = "user,item,rating\n" + "".join(f"{u},{i},{(u * i) % 5 + 1}\n" for u in range(200) for i in range(30))
    blob = gzip.compress(text.encode())
    path = tmp_path / "r.csv.gz"
    path.write_bytes(blob[: len(blob) // 2])
    from rbm_cuda.datasets import load

    with pytest.raises(DataError, match="truncated or corrupt"):
        load(path)


# ------------------------------------------------------------------------------------------ fuzz
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_cell = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                  st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(rows=st.lists(st.tuples(_cell, _cell, _cell), min_size=0, max_size=8))
def test_fuzzed_tables_give_rating_data_or_a_data_error(rows):
    df = pd.DataFrame(rows, columns=["user", "item", "rating"]) if rows else \
        pd.DataFrame({"user": [], "item": [], "rating": []})
    try:
        d = from_dataframe(df, duplicates="last")
    except DataError:
        return
    # what loads is consistent: every rating finite and on the levels, ids distinct
    assert np.isfinite(d.ratings.data).all()
    assert np.isin(d.ratings.data, d.levels.astype(np.float32)).all()
    assert len(set(d.user_ids.tolist())) == d.n_users and len(set(d.item_ids.tolist())) == d.n_items
