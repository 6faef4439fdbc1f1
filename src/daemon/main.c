/* placeholder: hutchd */
int main(void) { return 0; }
