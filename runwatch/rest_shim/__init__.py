"""REST compatibility shims: one module per contract, translating its wire format to resolver
calls and domain errors to its own status codes and error bodies."""
