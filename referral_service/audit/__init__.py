"""The tamper-evident audit log's cryptographic core: RFC 9162 Merkle trees, C2SP signed notes and checkpoints.

`verifier` is the auditors' standalone verifier (standard library and `cryptography` only);
`merkle` grows the tree over stored nodes and generates proofs; `note` signs notes and checkpoints.
"""
