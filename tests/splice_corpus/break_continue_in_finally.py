def target(n):
    out = []
    for i in range(n):
        try:
            if i == 3:
                return out
            out.append(i)
        finally:
            if i % 2:
                continue
            if i == 4:
                break
    else:
        out.append('else')
    return out
