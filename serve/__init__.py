"""The policy server: a bundle served over a websocket to many robots (docs/serving.md).

    python -m serve --bundle bundle/ [--backend ort-cpu] [--host 127.0.0.1] [--port 8000] [--api-key-file KEYFILE]

May import runtime/ (the engines, the policy, the wire format); runtime/ and sim/ never import it.
"""
