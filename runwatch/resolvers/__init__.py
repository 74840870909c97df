"""The domain: plain async functions, keyword-only, no web or GraphQL imports.

Every function takes the `caller` and enforces tenancy and scopes itself, so that the REST
shims and the GraphQL schema get the same answer for the same caller.
"""
