"""The parts of the random number stream: ticker, history, stats, live events, web."""
