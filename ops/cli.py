def main() -> None:
    print("hl7bus")
