"""Offline training data for the tiny Mixtral (see `corpus.py`)."""

from .corpus import DOMAINS, Document, build_corpus, by_domain, split_corpus

__all__ = ["DOMAINS", "Document", "build_corpus", "by_domain", "split_corpus"]
