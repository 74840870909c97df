"""Field names across surfaces: the domain says `append_log.message`, GraphQL and the ELT
contract say `appendLog.message`."""


def camel_field(name: str) -> str:
    """camelCase the first segment of a dotted field path; later segments are keys the
    client chose (`settings.private_key`) or already in the document's own case."""
    head, dot, rest = name.partition(".")
    first, *others = head.split("_")
    return first + "".join(part.capitalize() for part in others) + dot + rest
