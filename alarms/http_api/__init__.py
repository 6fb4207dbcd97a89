"""The HTTP API, ``/alarms/api/v1/``: bearer tokens, over the one service ``alarms.api``.

``urls`` builds the API; ``endpoints`` holds the operations, ``schemas`` what they
take and give, ``auth`` the tokens and scopes, ``errors`` every error response.
docs/api.md is the sender's guide.
"""
