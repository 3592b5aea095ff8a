"""``make bench``: Filmless measured against a peer DICOMweb archive (Orthanc) in one run.

Not a test: it prints figures and writes them to ``bench/results/``; nothing fails when a
target is missed. See ``bench/README.md``.
"""
