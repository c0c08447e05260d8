def target(n):
    count = 0
    def bump(step):
        nonlocal count
        count += step
        return count
    for i in range(n):
        bump(i)
    return count, bump(100)
