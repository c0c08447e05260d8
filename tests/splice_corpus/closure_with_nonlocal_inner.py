def make():
    count = 0
    def bump(step):
        nonlocal count
        if step is None:
            raise ValueError(count)
        count += step
        return count
    return bump
target = make()
