"""Print the schema's SDL: `python -m runwatch.schema.export > schema.graphql`."""

from runwatch.schema import build_schema


def sdl() -> str:
    return build_schema().as_str() + "\n"


if __name__ == "__main__":
    print(sdl(), end="")
