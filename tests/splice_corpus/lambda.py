target = lambda x, y=3: (x * y, [x] * 2)
