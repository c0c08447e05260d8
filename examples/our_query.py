"""The seed talk's example, timed with fastpatch.

`inner_query` runs a small SQLite query. We instrument it *after* another
module-level name (`run_report`) already captured a reference to it: the
patch is in the function's own code object, so that reference is timed too.

    python examples/our_query.py
"""

import sqlite3

import fastpatch


def inner_query(db):
    cursor = db.cursor()
    try:
        cursor.execute("SELECT name, price FROM fruit WHERE price < ? ORDER BY price", (3.0,))
        return cursor.fetchall()
    finally:
        cursor.close()


def failing_query(db):
    return db.execute("SELECT * FROM no_such_table").fetchall()


def rows_in_batches(db, size):
    cursor = db.execute("SELECT name FROM fruit ORDER BY name")
    while True:
        batch = cursor.fetchmany(size)
        if not batch:
            return
        yield batch


run_report = inner_query  # a reference taken before instrumentation


def main():
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE fruit (name TEXT, price REAL)")
    db.executemany(
        "INSERT INTO fruit VALUES (?, ?)",
        [("apple", 1.2), ("banana", 0.5), ("cherry", 4.0), ("durian", 9.9), ("elderberry", 2.5)],
    )

    for func in (inner_query, failing_query, rows_in_batches):
        fastpatch.instrument(func)

    for _ in range(1000):
        rows = run_report(db)
    print("cheap fruit:", rows)

    for _ in range(10):
        try:
            failing_query(db)
        except sqlite3.OperationalError:
            pass

    batches = list(rows_in_batches(db, 2))
    print("batches:", batches)

    print()
    fastpatch.report()
    s = fastpatch.stats(inner_query)
    assert s.calls == 1000 and s.errors == 0
    assert fastpatch.stats(failing_query).errors == 10


if __name__ == "__main__":
    main()
