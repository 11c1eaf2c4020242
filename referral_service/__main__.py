from referral_service.cli import main

main()
