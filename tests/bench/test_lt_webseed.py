"""bench/lt_webseed.py: the URLs it gives libtorrent for one origin."""

from bench.lt_webseed import urls


def test_distinct_urls_for_one_origin_each_a_directory():
    assert urls("http://127.0.0.1:80", 3) == ["http://127.0.0.1:80/", "http://127.0.0.1:80/s1/",
                                              "http://127.0.0.1:80/s2/"]
    assert urls("http://h/", 1) == ["http://h/"]
