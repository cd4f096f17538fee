"""Helpers shared by the AppTest suites: read the dataframes a page rendered."""


def frames(at) -> list:
    return [d.value for d in at.dataframe]


def find_frame(at, *cols):
    """The first dataframe on the page that has all of `cols`."""
    for df in frames(at):
        if set(cols) <= set(df.columns):
            return df
    raise AssertionError(f"no dataframe with columns {cols}: {[list(d.columns) for d in frames(at)]}")
