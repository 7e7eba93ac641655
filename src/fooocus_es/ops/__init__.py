"""Operations: metrics."""
