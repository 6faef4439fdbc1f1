/* placeholder: hutch CLI */
int main(void) { return 0; }
