"""Fetches the yearly sunspot numbers (1700-2008, 309 years; statsmodels' `sunspots` dataset) through pip only,
and writes them as a CSV that `hpcrnn prepare` reads.

pip downloads the statsmodels wheel (no dependencies, nothing installed) into a cache folder, and the CSV is
read straight out of the wheel.

    python docs/examples/sunspots/fetch.py OUT.csv [--cache DIR]
"""
import argparse
import csv
import glob
import io
import os
import subprocess
import sys
import zipfile

VERSION = "0.15.0"
MEMBER = "statsmodels/datasets/sunspots/sunspots.csv"


def wheel(cache):
    """Path of the statsmodels wheel in cache, downloaded by pip when it is not there yet."""
    pattern = os.path.join(cache, f"statsmodels-{VERSION}-*.whl")
    if not glob.glob(pattern):
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        f"statsmodels=={VERSION}", "--dest", cache], check=True)
    found = glob.glob(pattern)
    if not found:
        sys.exit(f"fetch.py: pip left no statsmodels {VERSION} wheel in {cache}")
    return found[0]


def read_rows(path):
    """[(year, sunspot number)] from the dataset's CSV inside the wheel."""
    with zipfile.ZipFile(path) as archive:
        text = archive.read(MEMBER).decode()
    rows = list(csv.reader(io.StringIO(text)))[1:]
    return [(int(float(year)), float(value)) for year, value in rows]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="CSV to write (one column: sunactivity)")
    parser.add_argument("--cache", default=os.path.join("runs", "pip-cache"), help="where the wheel is kept")
    args = parser.parse_args()
    os.makedirs(args.cache, exist_ok=True)
    rows = read_rows(wheel(args.cache))
    years = [year for year, _ in rows]
    if years != list(range(years[0], years[0] + len(years))):
        sys.exit(f"fetch.py: {MEMBER} is not one row per year")
    with open(args.out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sunactivity"])
        writer.writerows([[value] for _, value in rows])
    print(f"{args.out}: {len(rows)} years {years[0]}..{years[-1]}")


if __name__ == "__main__":
    main()
